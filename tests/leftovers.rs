//! Processes a child leaves behind (reparented to sockhold, the child
//! subreaper) are stopped when sockhold exits, so none outlives it.

use crate::harness::*;
use nix::sys::signal::Signal;
use nix::unistd::Pid;

/// sockhold with `options`, running a child that leaves `leftover` (a
/// shell command) running in the background and then becomes a test child
/// (with `child_args`) that says READY=1 at once. Returns once that child
/// is ready, with the leftover's pid.
fn start_leaving_behind(
    leftover: &str,
    options: &[&str],
    child_args: &str,
) -> (Sockhold, Pid, TempDir) {
    let dir = TempDir::new();
    let pid_file = dir.join("left.pid");
    let script = format!(
        "{leftover} & echo $! > {}; exec {} --ready-after 0 {child_args}",
        pid_file.display(),
        test_child_bin(),
    );
    let sockhold = Sockhold::command()
        .args(["-l", "127.0.0.1:0", "--ready", "notify"])
        .args(options)
        .args(["--", "sh", "-c", &script])
        .start();
    sockhold.wait_for("generation 1 ready");
    let text = std::fs::read_to_string(&pid_file).expect("read left.pid");
    let left = Pid::from_raw(text.trim().parse().expect("a pid in left.pid"));
    assert!(pid_is_alive(left));
    (sockhold, left, dir)
}

#[test]
fn leftovers_get_the_stop_signal_when_sockhold_stops() {
    let (mut sockhold, left, _dir) = start_leaving_behind("sleep 1000", &[], "");
    sockhold.signal(Signal::SIGTERM);
    let log = sockhold.exits_with(0);
    let line = format!("stopping what the child left behind: SIGTERM to pid {left}");
    assert!(log.contains(&line), "{log}");
    assert!(!log.contains("SIGKILL"), "{log}");
    assert!(!pid_is_alive(left), "pid {left} outlived sockhold");
}

#[test]
fn leftover_that_ignores_the_stop_signal_is_killed_after_the_stop_timeout() {
    let (mut sockhold, left, _dir) = start_leaving_behind(
        "(trap '' TERM; exec sleep 1000)",
        &["--stop-timeout", "200ms"],
        "",
    );
    sockhold.signal(Signal::SIGTERM);
    let log = sockhold.exits_with(0);
    let line = format!("left behind and still running: SIGKILL to pid {left}");
    assert!(log.contains(&line), "{log}");
    assert!(!pid_is_alive(left), "pid {left} outlived sockhold");
}

#[test]
fn child_that_exits_on_its_own_keeps_its_status_and_its_leftovers_stop() {
    let (mut sockhold, left, _dir) = start_leaving_behind(
        "sleep 1000",
        &["--restart", "never"],
        "--exit-after 100 --exit-code 3",
    );
    let log = sockhold.exits_with(3);
    assert!(log.contains(&format!("SIGTERM to pid {left}")), "{log}");
    assert!(!pid_is_alive(left), "pid {left} outlived sockhold");
}
