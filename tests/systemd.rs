//! sockhold under a service manager: sockets passed to sockhold itself
//! (LISTEN_FDS, driven by systemd-socket-activate, which execs sockhold with
//! them) are adopted first, and a fake NOTIFY_SOCKET records what sockhold
//! tells the service manager.

use crate::harness::*;
use nix::sys::signal::Signal;

fn monotonic_usec() -> u64 {
    let now = nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC).unwrap();
    now.tv_sec() as u64 * 1_000_000 + now.tv_nsec() as u64 / 1_000
}

/// `systemd-socket-activate -l PATH ...` holding a Unix socket in `dir`; it
/// execs sockhold on the first connection, with LISTEN_FDS=1.
fn socket_activate(dir: &TempDir, extra: &[&str]) -> Vec<String> {
    let mut launcher = vec![
        "systemd-socket-activate".to_string(),
        "-l".to_string(),
        dir.join("app.sock").to_str().unwrap().to_string(),
    ];
    launcher.extend(extra.iter().map(|s| s.to_string()));
    launcher
}

#[test]
fn sockets_passed_by_the_service_manager_come_first_with_their_names() {
    let dir = TempDir::new();
    let app = dir.join("app.sock");
    let sockhold = Sockhold::launched_by(&socket_activate(&dir, &["--fdname=web"]))
        .args(["-l", "127.0.0.1:0", "--", test_child_bin(), "--report"])
        .start();
    sockhold.wait_for("Listening on");
    // systemd-socket-activate starts sockhold on the first connection; this
    // one waits in the backlog meanwhile and is answered by the child.
    let answer = request_unix(&app).unwrap();
    let report = report_fields(&answer);
    assert_eq!(report["fds"], "0 1 2 3 4", "{answer}");
    assert_eq!(report["LISTEN_FDS"], "2", "{answer}");
    assert_eq!(report["LISTEN_FDNAMES"], "web:fd4", "{answer}");
    assert_eq!(report["LISTEN_PID"], report["pid"], "{answer}");
    let adopted = sockhold.wait_for("listening on inherited fd 3");
    assert!(adopted.contains("name web"), "{adopted}");
    assert!(adopted.contains(app.to_str().unwrap()), "{adopted}");
    let by_tcp = request_tcp(sockhold.tcp_address(0)).unwrap();
    assert_eq!(report_fields(&by_tcp)["LISTEN_FDNAMES"], "web:fd4");
}

#[test]
fn passed_fd_that_is_not_a_listening_socket_is_refused() {
    // sh execs sockhold in its own process, so $$ is sockhold's pid.
    let mut sockhold = Sockhold::launched_by(&[
        "sh",
        "-c",
        r#"LISTEN_PID=$$ LISTEN_FDS=1 LISTEN_FDNAMES=web exec "$0" "$@" 3</dev/null"#,
    ])
    .args(["--", test_child_bin()])
    .start();
    let status = sockhold.wait_exit();
    let log = sockhold.log_text();
    assert_eq!(status.code(), Some(64), "{log}");
    assert!(
        log.contains("sockhold: error: cannot adopt 'fd:3 (LISTEN_FDS)': not a socket"),
        "{log}"
    );
}

#[test]
fn passed_fd_given_again_with_listen_is_refused() {
    let mut sockhold = Sockhold::launched_by(&[
        "sh",
        "-c",
        r#"LISTEN_PID=$$ LISTEN_FDS=1 exec "$0" "$@" 3</dev/null"#,
    ])
    .args(["-l", "fd:3", "--", test_child_bin()])
    .start();
    let status = sockhold.wait_exit();
    let log = sockhold.log_text();
    assert_eq!(status.code(), Some(64), "{log}");
    assert!(
        log.contains("fd 3 is already adopted as 'fd:3 (LISTEN_FDS)'"),
        "{log}"
    );
}

#[test]
fn service_manager_hears_ready_reloading_ready_and_stopping() {
    let dir = TempDir::new();
    let notify = FakeNotify::bind(&dir.join("notify"));
    let fail_marker = dir.join("fail");
    // Generations fail at start while the marker file exists.
    let script = format!(
        "test -e {} && exit 4; exec {} --ready-after 0",
        fail_marker.display(),
        test_child_bin()
    );
    let notify_env = format!("--setenv=NOTIFY_SOCKET={}", dir.join("notify").display());
    let mut sockhold = Sockhold::launched_by(&socket_activate(&dir, &[&notify_env]))
        .args(["--ready", "notify", "--", "sh", "-c", &script])
        .start();
    sockhold.wait_for("Listening on");
    request_unix(&dir.join("app.sock")).unwrap();

    let ready = notify.next();
    // The log reader has seen the child's pid once it has seen this line.
    sockhold.wait_for("generation 1 ready");
    let first_pid = sockhold.child_pids()[0];
    assert_eq!(
        ready,
        format!("READY=1\nSTATUS=generation 1 serving (pid {first_pid})")
    );

    let before_reload = monotonic_usec();
    sockhold.signal(Signal::SIGHUP);
    let reloading = notify.next();
    let after_reload = monotonic_usec();
    let fields = report_fields(&reloading);
    assert_eq!(fields["RELOADING"], "1", "{reloading}");
    let usec: u64 = fields["MONOTONIC_USEC"].parse().unwrap();
    assert!(
        (before_reload..=after_reload).contains(&usec),
        "MONOTONIC_USEC={usec} not between {before_reload} and {after_reload}"
    );
    assert_eq!(
        fields["STATUS"],
        format!("reloading: generation 2 starting; generation 1 serving (pid {first_pid})")
    );
    sockhold.wait_for("generation 2 ready");
    let second_pid = sockhold.child_pids()[1];
    assert_eq!(
        notify.next(),
        format!("READY=1\nSTATUS=generation 2 serving (pid {second_pid})")
    );

    // A failed reload ends with READY=1 too: systemd waits for it.
    std::fs::write(&fail_marker, "").unwrap();
    sockhold.signal(Signal::SIGHUP);
    assert!(notify.next().starts_with("RELOADING=1\n"));
    assert_eq!(
        notify.next(),
        format!(
            "READY=1\nSTATUS=reload failed: generation 3 exited with status 4 before ready; generation 2 serving (pid {second_pid})"
        )
    );

    sockhold.signal(Signal::SIGTERM);
    assert_eq!(notify.next(), "STOPPING=1\nSTATUS=stopping");
    sockhold.exits_with(0);
}

#[test]
fn watchdog_is_pinged_at_half_watchdog_usec() {
    let dir = TempDir::new();
    let notify = FakeNotify::bind(&dir.join("notify"));
    let sockhold = Sockhold::command()
        .env("NOTIFY_SOCKET", dir.join("notify"))
        .env("WATCHDOG_USEC", "40000")
        .args(["-l", "127.0.0.1:0", "--ready", "notify", "--"])
        .args([test_child_bin(), "--ready-after", "0"])
        .start();
    let mut pings = 0;
    while pings < 3 {
        if notify.next() == "WATCHDOG=1" {
            pings += 1;
        }
    }
    drop(sockhold);
}

#[test]
fn watchdog_meant_for_another_pid_is_not_pinged() {
    let dir = TempDir::new();
    let notify = FakeNotify::bind(&dir.join("notify"));
    // A 10ms interval: several pings would be due by the time the child is
    // ready (it waits 100ms), were the watchdog ours.
    let mut sockhold = Sockhold::command()
        .env("NOTIFY_SOCKET", dir.join("notify"))
        .env("WATCHDOG_USEC", "20000")
        .env("WATCHDOG_PID", "1")
        .args(["-l", "127.0.0.1:0", "--ready", "notify", "--"])
        .args([test_child_bin(), "--ready-after", "100"])
        .start();
    assert!(notify.next().starts_with("READY=1\n"));
    sockhold.signal(Signal::SIGTERM);
    assert!(notify.next().starts_with("STOPPING=1\n"));
    sockhold.wait_exit();
}
