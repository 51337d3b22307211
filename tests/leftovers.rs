//! Processes a child leaves behind (reparented to sockhold, the child
//! subreaper) are stopped when sockhold exits, so none outlives it.

use crate::harness::*;
use nix::sys::signal::Signal;
use nix::sys::stat::Mode;
use nix::unistd::Pid;
use std::io::Write;

/// What the leftover says on stderr (sockhold's, so in the log) once its
/// setup is done, followed by its pid.
const LEFTOVER_SAYS: &str = "leftover set up: pid ";

/// sockhold with `options`, running a child that leaves a process behind
/// and then becomes a test child (with `child_args`) that says READY=1 at
/// once. The leftover runs `leftover_setup` (shell commands, e.g. a trap),
/// only then says its pid, and then execs `sleep 1000`. Returns once the
/// test child is ready, with the leftover held by a pidfd.
///
/// The child waits for the test's go (a line through a FIFO) before it
/// becomes the test child, so that nothing can stop the leftover before
/// the test holds it, however slowly the test runs.
fn start_leaving_behind(
    leftover_setup: &str,
    options: &[&str],
    child_args: &str,
) -> (Sockhold, Process, TempDir) {
    let dir = TempDir::new();
    let go = dir.join("go");
    nix::unistd::mkfifo(&go, Mode::S_IRUSR | Mode::S_IWUSR).expect("mkfifo");
    // Read and write: opening a FIFO so never blocks, and while this is
    // open the child's `read` waits for our line, not for a writer, and the
    // line stays in the FIFO even if the child opens it only later.
    let mut go_writer = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&go)
        .expect("open the go FIFO");
    // Inside the single quotes, `$$` is the leftover shell's own pid, and
    // it stays the leftover's pid through `exec sleep`.
    let script = format!(
        "sh -c '{leftover_setup}echo \"{LEFTOVER_SAYS}$$\" >&2; exec sleep 1000' & \
         read go < {}; exec {} --ready-after 0 {child_args}",
        go.display(),
        test_child_bin(),
    );
    let sockhold = Sockhold::command()
        .args(["-l", "127.0.0.1:0", "--ready", "notify"])
        .args(options)
        .args(["--", "sh", "-c", &script])
        .start();
    let said = sockhold.wait_for(LEFTOVER_SAYS);
    let pid = said
        .split(LEFTOVER_SAYS)
        .nth(1)
        .and_then(|pid| pid.trim().parse().ok())
        .map(Pid::from_raw)
        .unwrap_or_else(|| panic!("no pid in {said:?}"));
    // Its parent, the child, waits for our go: the leftover is still there.
    let left = Process::descendant_of(pid, sockhold.pid).unwrap_or_else(|| {
        panic!(
            "pid {pid} is not sockhold's descendant; log:\n{}",
            sockhold.log_text()
        )
    });
    assert!(left.is_running());
    go_writer.write_all(b"go\n").expect("write to the go FIFO");
    sockhold.wait_for("generation 1 ready");
    (sockhold, left, dir)
}

#[test]
fn leftovers_get_the_stop_signal_when_sockhold_stops() {
    let (mut sockhold, left, _dir) = start_leaving_behind("", &[], "");
    sockhold.signal(Signal::SIGTERM);
    let log = sockhold.exits_with(0);
    let line = format!(
        "stopping what the child left behind: SIGTERM to pid {}",
        left.pid()
    );
    assert!(log.contains(&line), "{log}");
    assert!(!log.contains("SIGKILL"), "{log}");
    assert!(!left.is_running(), "pid {} outlived sockhold", left.pid());
}

#[test]
fn leftover_that_ignores_the_stop_signal_is_killed_after_the_stop_timeout() {
    // The leftover says its pid only once TERM is ignored, so sockhold's
    // TERM cannot come before the trap.
    let (mut sockhold, left, _dir) =
        start_leaving_behind("trap \"\" TERM; ", &["--stop-timeout", "200ms"], "");
    sockhold.signal(Signal::SIGTERM);
    let log = sockhold.exits_with(0);
    let line = format!(
        "left behind and still running: SIGKILL to pid {}",
        left.pid()
    );
    assert!(log.contains(&line), "{log}");
    assert!(!left.is_running(), "pid {} outlived sockhold", left.pid());
}

#[test]
fn child_that_exits_on_its_own_keeps_its_status_and_its_leftovers_stop() {
    let (mut sockhold, left, _dir) = start_leaving_behind(
        "",
        &["--restart", "never"],
        "--exit-after 100 --exit-code 3",
    );
    let log = sockhold.exits_with(3);
    assert!(
        log.contains(&format!("SIGTERM to pid {}", left.pid())),
        "{log}"
    );
    assert!(!left.is_running(), "pid {} outlived sockhold", left.pid());
}
