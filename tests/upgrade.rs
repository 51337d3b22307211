//! `sockhold upgrade`: sockhold executes its binary again in its own place
//! (same pid, the same children, the same sockets), refuses a target that
//! does not answer the probe, carries what is in flight (reloads, backoffs,
//! `--lazy` idling, generations stopping, waiting control clients), and
//! leaks nothing over many upgrades.

use crate::harness::*;
use nix::unistd::Pid;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

fn rss_kib(pid: i32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

fn upgrade_under_load(workers: &str) {
    let dir = TempDir::new();
    let control = dir.join("c.sock");
    let sockhold = Sockhold::command()
        .args(["-l", "127.0.0.1:0", "--workers", workers, "--control"])
        .arg(&control)
        .args(["--", test_child_bin(), "--graceful"])
        .start();
    sockhold.wait_for("generation 1 ready");
    let (_, before, _) = control_client(&["status"], &control);
    let pid = status_pid(&before);
    let children = sockhold.child_pids();
    let address = sockhold.tcp_address(0);
    let stop = Arc::new(AtomicBool::new(false));
    let client = hammer(Arc::clone(&stop), move || request_tcp(address));
    let (code, out, err) = control_client(&["upgrade"], &control);
    assert_eq!(code, 0, "{err}");
    assert_eq!(out, format!("upgraded: pid {pid} runs {}", sockhold_bin()));
    sockhold.wait_for("upgraded: pid");
    stop_hammer(&stop, client);
    for child in &children {
        assert_eq!(parent_of(*child), Some(Pid::from_raw(pid)), "{child}");
    }
    let (code, after, err) = control_client(&["status"], &control);
    assert_eq!(code, 0, "{err}");
    assert_eq!(status_pid(&after), pid);
    let (code, _, err) = control_client(&["reload"], &control);
    assert_eq!(code, 0, "{err}");
    let (code, _, err) = control_client(&["scale", "3"], &control);
    assert_eq!(code, 0, "{err}");
    let mut sockhold = sockhold;
    sockhold.signal(nix::sys::signal::Signal::SIGTERM);
    assert_eq!(sockhold.wait_exit().code(), Some(0));
}

#[test]
fn upgrade_keeps_the_pid_and_the_children_and_drops_no_connection() {
    upgrade_under_load("1");
}

#[test]
fn upgrade_with_two_workers_keeps_both_and_drops_no_connection() {
    upgrade_under_load("2");
}

#[test]
fn a_target_that_is_not_sockhold_is_refused_and_the_old_one_serves_on() {
    let dir = TempDir::new();
    let control = dir.join("c.sock");
    let _sockhold = serving_test_child(&control, &[], &[]);
    let (_, before, _) = control_client(&["status"], &control);
    let pid = status_pid(&before);
    let not_executable = dir.join("plain");
    std::fs::write(&not_executable, "#!/bin/sh\n").unwrap();
    let other_version = dir.join("v2");
    write_executable(&other_version, "#!/bin/sh\necho sockhold upgrade-state 3\n");
    for (target, reason) in [
        (
            "/bin/true".to_string(),
            "/bin/true did not answer the upgrade probe: is it sockhold?".to_string(),
        ),
        (
            not_executable.display().to_string(),
            format!(
                "cannot execute {}: permission denied",
                not_executable.display()
            ),
        ),
        (
            other_version.display().to_string(),
            "it reads state versions 3, this sockhold writes 2".to_string(),
        ),
    ] {
        let (code, _, err) = control_client(&["upgrade", "--exec", &target], &control);
        assert_ne!(code, 0, "{target}");
        assert!(err.to_lowercase().contains(&reason.to_lowercase()), "{err}");
        let (code, after, err) = control_client(&["status"], &control);
        assert_eq!(code, 0, "{err}");
        assert_eq!(status_pid(&after), pid);
    }
    let (code, _, err) = control_client(&["upgrade", "--exec", "relative/sockhold"], &control);
    assert_eq!(code, 64, "{err}");
}

#[test]
fn upgrade_with_unix_socket_pid_file_and_control_leaves_no_file_behind() {
    let dir = TempDir::new();
    let control = dir.join("c.sock");
    let socket = dir.join("u.sock");
    let pid_file = dir.join("p.pid");
    let mut sockhold = Sockhold::command()
        .arg("-l")
        .arg(&socket)
        .arg("--pid-file")
        .arg(&pid_file)
        .arg("--control")
        .arg(&control)
        .args(["--", test_child_bin()])
        .start();
    sockhold.wait_for("generation 1 ready");
    let (code, _, err) = control_client(&["upgrade"], &control);
    assert_eq!(code, 0, "{err}");
    request_unix(&socket).expect("the socket file still answers");
    assert!(pid_file.exists() && control.exists());
    sockhold.signal(nix::sys::signal::Signal::SIGTERM);
    assert_eq!(sockhold.wait_exit().code(), Some(0));
    for path in [&control, &socket, &pid_file] {
        assert!(!path.exists(), "{} left behind", path.display());
    }
}

#[test]
fn twenty_upgrades_leak_no_fd_and_no_memory() {
    let dir = TempDir::new();
    let control = dir.join("c.sock");
    let _sockhold = serving_test_child(&control, &["--workers", "2"], &[]);
    let (_, status, _) = control_client(&["status"], &control);
    let pid = status_pid(&status);
    let (code, _, err) = control_client(&["upgrade"], &control);
    assert_eq!(code, 0, "{err}");
    let fds = fd_count(pid);
    let rss = rss_kib(pid);
    for _ in 0..20 {
        let (code, _, err) = control_client(&["upgrade"], &control);
        assert_eq!(code, 0, "{err}");
    }
    assert_eq!(fd_count(pid), fds);
    assert!(rss_kib(pid) < rss + 2048, "{} KiB, was {rss}", rss_kib(pid));
}

/// A `reload` client started before the upgrade, waiting for its answer.
fn reload_client(control: &std::path::Path) -> std::thread::JoinHandle<(i32, String, String)> {
    let control = control.to_path_buf();
    std::thread::spawn(move || control_client(&["reload"], &control))
}

fn upgrade(sockhold: &Sockhold, control: &std::path::Path) {
    let (code, out, err) = control_client(&["upgrade"], control);
    assert_eq!(code, 0, "{out} {err}\nlog:\n{}", sockhold.log_text());
    sockhold.wait_for("upgraded: pid");
}

/// A reload in flight goes on in the new binary: its generation becomes
/// ready after the upgrade, the old one stops then, the `reload` client
/// that waited gets its answer, and no connection fails meanwhile.
fn upgrade_during_a_reload(workers: &str, boot: &str) {
    let dir = TempDir::new();
    let control = dir.join("c.sock");
    let sockhold = Sockhold::command()
        .args(["-l", "127.0.0.1:0", "--workers", workers, "--control"])
        .arg(&control)
        .args(["--", test_child_bin(), "--graceful", "--boot", boot])
        .start();
    sockhold.wait_for("generation 1 ready");
    let address = sockhold.tcp_address(0);
    let stop = Arc::new(AtomicBool::new(false));
    let client = hammer(Arc::clone(&stop), move || request_tcp(address));
    let waiting = reload_client(&control);
    let started = if workers == "1" {
        "generation 2 started"
    } else {
        "generation 2 worker 0 started"
    };
    sockhold.wait_for(started);
    upgrade(&sockhold, &control);
    // Taken after "upgraded": it happened in the new binary.
    let ready = sockhold.wait_for("generation 2 ready");
    if workers != "1" {
        assert!(
            ready.contains(&format!("all {workers} workers ready")),
            "{ready}"
        );
    }
    sockhold.wait_for(if workers == "1" {
        "generation 1 exited"
    } else {
        "generation 1 worker 2 exited"
    });
    let (code, out, err) = waiting.join().unwrap();
    assert_eq!(code, 0, "{out} {err}");
    assert!(out.contains("generation 2 pid"), "{out}");
    let pids = stop_hammer(&stop, client);
    assert!(!pids.is_empty());
    let (_, status, _) = control_client(&["status"], &control);
    let states = worker_states(&status);
    assert_eq!(states.len(), workers.parse::<usize>().unwrap(), "{status}");
    assert!(states.iter().all(|s| s == "ready"), "{status}");
    let mut sockhold = sockhold;
    sockhold.signal(nix::sys::signal::Signal::SIGTERM);
    assert_eq!(sockhold.wait_exit().code(), Some(0));
}

#[test]
fn upgrade_during_a_reload_carries_it_and_answers_the_waiting_client() {
    upgrade_during_a_reload("1", "1500");
}

#[test]
fn upgrade_during_a_rolling_reload_of_three_workers_carries_it() {
    upgrade_during_a_reload("3", "700");
}

/// A `scale` waiting for its new workers to be ready when the upgrade
/// comes is answered by the new binary once they are.
#[test]
fn upgrade_while_a_scale_waits_answers_it_from_the_new_binary() {
    let dir = TempDir::new();
    let control = dir.join("c.sock");
    let sockhold = serving_test_child(&control, &[], &["--boot", "1000"]);
    let waiting = {
        let control = control.clone();
        std::thread::spawn(move || control_client(&["scale", "2"], &control))
    };
    sockhold.wait_for("generation 1 worker 1 started");
    upgrade(&sockhold, &control);
    sockhold.wait_for("scaled: generation 1 has 2 ready workers");
    let (code, out, err) = waiting.join().unwrap();
    assert_eq!(code, 0, "{out} {err}");
    assert_eq!(out, "scaled: generation 1 has 2 ready workers");
}

/// A crashed child waiting for its restart backoff is restarted by the
/// new binary, at the time the old one set (not a backoff counted again
/// from the upgrade).
#[test]
fn upgrade_during_a_restart_backoff_restarts_at_the_same_time() {
    let dir = TempDir::new();
    let control = dir.join("c.sock");
    let sockhold = Sockhold::command()
        .args(["-l", "127.0.0.1:0", "--control"])
        .arg(&control)
        .args(["--", test_child_bin(), "--exit-at-start", "1"])
        .start();
    // 100ms, 200ms, 400ms, 800ms, 1.6s, then 3.2s.
    sockhold.wait_for("restarting in 3.2s (restart 6)");
    let seen = Instant::now();
    // Halfway through the backoff (no event to wait for: only time), so
    // that a backoff counted again from the upgrade would show.
    std::thread::sleep(Duration::from_millis(1000));
    upgrade(&sockhold, &control);
    let upgraded = Instant::now();
    let (_, status, _) = control_client(&["status"], &control);
    assert!(
        status.contains("\"state\":\"waiting to restart\""),
        "{status}"
    );
    sockhold.wait_for("generation 7 started");
    // Not early, and not 3.2s after the upgrade either (however long
    // the upgrade took).
    let (waited, after) = (seen.elapsed(), upgraded.elapsed());
    assert!(
        waited >= Duration::from_millis(2700) && after < Duration::from_millis(2700),
        "restarted {waited:?} after the crash, {after:?} after the upgrade: not 3.2s after the crash\nlog:\n{}",
        sockhold.log_text()
    );
}

/// `--lazy` with nobody running: the new binary watches the listeners,
/// and the first connection starts the child and is answered.
#[test]
fn upgrade_while_lazy_and_idle_then_a_connection_starts_the_child() {
    let dir = TempDir::new();
    let control = dir.join("c.sock");
    let sockhold = Sockhold::command()
        .args(["--lazy", "-l", "127.0.0.1:0", "--control"])
        .arg(&control)
        .args(["--", test_child_bin()])
        .start();
    sockhold.wait_for("waiting for a connection to start generation 1 (--lazy)");
    upgrade(&sockhold, &control);
    let answer = request_tcp(sockhold.tcp_address(0)).expect("answered after the upgrade");
    sockhold.wait_for("connection waiting: starting generation 1");
    sockhold.wait_for("generation 1 started");
    let child = sockhold.child_pids()[0];
    assert_eq!(answer_pid(&answer), child.as_raw());
    let mut sockhold = sockhold;
    sockhold.signal(nix::sys::signal::Signal::SIGTERM);
    assert_eq!(sockhold.wait_exit().code(), Some(0));
}

/// An old generation that ignores SIGTERM is still stopping at the
/// upgrade: the new binary SIGKILLs it at the deadline the old one set.
#[test]
fn upgrade_while_an_old_generation_stops_kills_it_at_its_deadline() {
    let dir = TempDir::new();
    let control = dir.join("c.sock");
    let sockhold = serving_test_child(&control, &["--stop-timeout", "4s"], &["--ignore-term"]);
    let old = sockhold.child_pids()[0];
    sockhold.signal(nix::sys::signal::Signal::SIGHUP);
    sockhold.wait_for(&format!("generation 1 stopping: SIGTERM to pid {old}"));
    let asked = Instant::now();
    // Halfway to the SIGKILL (only time to wait for), so that a stop
    // timeout counted again from the upgrade would show.
    std::thread::sleep(Duration::from_millis(1000));
    upgrade(&sockhold, &control);
    let upgraded = Instant::now();
    let (_, status, _) = control_client(&["status"], &control);
    assert!(status.contains("\"state\":\"stopping\""), "{status}");
    sockhold.wait_for(&format!("did not stop within 4s: SIGKILL to pid {old}"));
    // Not early, and not 4s after the upgrade either (however long the
    // upgrade took).
    let (waited, after) = (asked.elapsed(), upgraded.elapsed());
    assert!(
        waited >= Duration::from_millis(3500) && after < Duration::from_millis(3500),
        "SIGKILL {waited:?} after SIGTERM, {after:?} after the upgrade: not 4s after SIGTERM\nlog:\n{}",
        sockhold.log_text()
    );
    sockhold.wait_for("generation 1 exited with signal SIGKILL");
    request_tcp(sockhold.tcp_address(0)).expect("generation 2 serves");
}

#[test]
fn under_a_service_manager_an_upgrade_is_reloading_then_ready_with_the_same_main_pid() {
    let dir = TempDir::new();
    let control = dir.join("c.sock");
    let notify = FakeNotify::bind(&dir.join("notify"));
    let sockhold = Sockhold::command()
        .env("NOTIFY_SOCKET", dir.join("notify"))
        .args(["-l", "127.0.0.1:0", "--ready", "notify", "--control"])
        .arg(&control)
        .args(["--", test_child_bin(), "--ready-after", "0"])
        .start();
    sockhold.wait_for("generation 1 ready");
    let child = sockhold.child_pids()[0];
    let serving = format!("generation 1 serving (pid {child})");
    assert_eq!(notify.next(), format!("READY=1\nSTATUS={serving}"));
    let (code, out, err) = control_client(&["upgrade"], &control);
    assert_eq!(code, 0, "{out} {err}");
    let reloading = notify.next();
    assert!(
        reloading.starts_with("RELOADING=1\nMONOTONIC_USEC=")
            && reloading.ends_with("\nSTATUS=upgrading sockhold"),
        "{reloading}"
    );
    // The new binary says it serves: the same child, and no MAINPID= (the
    // pid did not change).
    assert_eq!(notify.next(), format!("READY=1\nSTATUS={serving}"));
    // A refused upgrade says nothing to the service manager.
    let (code, _, err) = control_client(&["upgrade", "--exec", "/bin/true"], &control);
    assert_ne!(code, 0);
    assert!(err.contains("did not answer the upgrade probe"), "{err}");
    let mut sockhold = sockhold;
    sockhold.signal(nix::sys::signal::Signal::SIGTERM);
    assert_eq!(notify.next(), "STOPPING=1\nSTATUS=stopping");
    assert_eq!(sockhold.wait_exit().code(), Some(0));
}

#[test]
fn a_control_client_halfway_through_its_request_is_answered_by_the_new_binary() {
    use std::io::{Read, Write};
    let dir = TempDir::new();
    let control = dir.join("c.sock");
    let sockhold = serving_test_child(&control, &[], &[]);
    let connect = || {
        let stream = std::os::unix::net::UnixStream::connect(&control).unwrap();
        stream.set_read_timeout(Some(WAIT)).unwrap();
        stream
    };
    // One has sent half its request, one nothing yet.
    let mut half = connect();
    half.write_all(b"sta").unwrap();
    let mut silent = connect();
    // Both are in sockhold's hands (accepted, read) once a later client
    // has been answered: connections are served in order.
    let (code, _, err) = control_client(&["status"], &control);
    assert_eq!(code, 0, "{err}");
    let (code, out, err) = control_client(&["upgrade"], &control);
    assert_eq!(code, 0, "{out} {err}");
    half.write_all(b"tus\n").unwrap();
    silent.write_all(b"status\n").unwrap();
    for (name, stream) in [("half", &mut half), ("silent", &mut silent)] {
        let mut reply = String::new();
        stream.read_to_string(&mut reply).unwrap();
        assert!(reply.starts_with("{\"pid\":"), "{name}: {reply:?}");
        assert_eq!(status_pid(&reply), sockhold.pid.as_raw(), "{name}");
    }
}
