//! Processes a child leaves behind (reparented to sockhold, the child
//! subreaper) are stopped when sockhold exits, so none outlives it.

use crate::harness::*;
use nix::sys::signal::Signal;
use nix::unistd::Pid;

/// A child that leaves `leftover` (a shell command) running in the
/// background, writes its pid to `dir/left.pid`, and then becomes a
/// test child that says READY=1 at once.
fn leaving_behind(dir: &TempDir, leftover: &str, child_args: &str) -> String {
    format!(
        "{leftover} & echo $! > {pid_file}; exec {child} --ready-after 0 {child_args}",
        pid_file = dir.join("left.pid").display(),
        child = test_child_bin(),
    )
}

fn leftover_pid(dir: &TempDir) -> Pid {
    let text = std::fs::read_to_string(dir.join("left.pid")).expect("read left.pid");
    Pid::from_raw(text.trim().parse().expect("a pid in left.pid"))
}

#[test]
fn leftovers_get_the_stop_signal_when_sockhold_stops() {
    let dir = TempDir::new();
    let script = leaving_behind(&dir, "sleep 1000", "");
    let mut sockhold = Sockhold::command()
        .args(["-l", "127.0.0.1:0", "--ready", "notify", "--", "sh", "-c"])
        .arg(&script)
        .start();
    sockhold.wait_for("generation 1 ready");
    let left = leftover_pid(&dir);
    assert!(pid_is_alive(left));
    sockhold.signal(Signal::SIGTERM);
    assert_eq!(
        sockhold.wait_exit().code(),
        Some(0),
        "{}",
        sockhold.log_text()
    );
    let log = sockhold.log_text();
    assert!(
        log.contains(&format!(
            "stopping what the child left behind: SIGTERM to pid {left}"
        )),
        "{log}"
    );
    assert!(!log.contains("SIGKILL"), "{log}");
    assert!(!pid_is_alive(left), "pid {left} outlived sockhold");
}

#[test]
fn leftover_that_ignores_the_stop_signal_is_killed_after_the_stop_timeout() {
    let dir = TempDir::new();
    let script = leaving_behind(&dir, "(trap '' TERM; exec sleep 1000)", "");
    let mut sockhold = Sockhold::command()
        .args(["-l", "127.0.0.1:0", "--ready", "notify", "--stop-timeout"])
        .args(["200ms", "--", "sh", "-c"])
        .arg(&script)
        .start();
    sockhold.wait_for("generation 1 ready");
    let left = leftover_pid(&dir);
    sockhold.signal(Signal::SIGTERM);
    assert_eq!(
        sockhold.wait_exit().code(),
        Some(0),
        "{}",
        sockhold.log_text()
    );
    let log = sockhold.log_text();
    assert!(
        log.contains(&format!(
            "left behind and still running: SIGKILL to pid {left}"
        )),
        "{log}"
    );
    assert!(!pid_is_alive(left), "pid {left} outlived sockhold");
}

#[test]
fn child_that_exits_on_its_own_keeps_its_status_and_its_leftovers_stop() {
    let dir = TempDir::new();
    let script = leaving_behind(&dir, "sleep 1000", "--exit-after 100 --exit-code 3");
    let mut sockhold = Sockhold::command()
        .args([
            "-l",
            "127.0.0.1:0",
            "--ready",
            "notify",
            "--restart",
            "never",
        ])
        .args(["--", "sh", "-c"])
        .arg(&script)
        .start();
    sockhold.wait_for("generation 1 ready");
    let left = leftover_pid(&dir);
    assert_eq!(
        sockhold.wait_exit().code(),
        Some(3),
        "{}",
        sockhold.log_text()
    );
    assert!(
        sockhold
            .log_text()
            .contains(&format!("SIGTERM to pid {left}")),
        "{}",
        sockhold.log_text()
    );
    assert!(!pid_is_alive(left), "pid {left} outlived sockhold");
}
