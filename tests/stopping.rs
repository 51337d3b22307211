//! Stopping children at the seams: a stop that races a child's death, a
//! stopped (SIGSTOPped) child asked to stop, a second `stop` request, and a
//! first generation that never became ready.

use crate::harness::*;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::{Duration, Instant};

/// The state letter of /proc/PID/stat (`R`, `S`, `T`, `Z`, ...).
fn process_state(pid: Pid) -> Option<char> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let (_, rest) = stat.rsplit_once(')')?;
    rest.split_whitespace().next()?.chars().next()
}

/// Waits (bounded) until the process is in `state`. The kernel gives a
/// non-parent no event for a state change, so /proc is read until it shows.
fn wait_for_state(pid: Pid, state: char) {
    let deadline = Instant::now() + WAIT;
    while process_state(pid) != Some(state) {
        assert!(
            Instant::now() < deadline,
            "pid {pid} never reached state {state}: {:?}",
            process_state(pid)
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// The only child sockhold has started so far.
fn only_child(sockhold: &Sockhold) -> Pid {
    let pids = sockhold.child_pids();
    assert_eq!(pids.len(), 1, "log:\n{}", sockhold.log_text());
    pids[0]
}

#[test]
fn stop_racing_a_child_death_sends_no_signal_to_the_reaped_child() {
    let sockhold = Sockhold::command()
        .args(["-l", "127.0.0.1:0", "--ready", "notify", "--"])
        .arg(test_child_bin())
        .args(["--ready-after", "0"])
        .start();
    sockhold.wait_for("generation 1 ready");
    let child = only_child(&sockhold);
    // With sockhold stopped, the child dies and TERM arrives: on SIGCONT
    // both are handled in the same wakeup, TERM's event before SIGCHLD's
    // (signal-hook reports them in signal-number order).
    sockhold.signal(Signal::SIGSTOP);
    wait_for_state(sockhold.pid, 'T');
    kill(child, Signal::SIGKILL).unwrap();
    wait_for_state(child, 'Z');
    sockhold.signal(Signal::SIGTERM);
    sockhold.signal(Signal::SIGCONT);
    let mut sockhold = sockhold;
    // The death came first: it is judged by the restart policy, and the
    // stop then finds nothing to stop.
    let log = sockhold.exits_with(0);
    assert!(
        log.contains("generation 1 (pid ") && log.contains("exited on its own with signal SIGKILL"),
        "{log}"
    );
    assert!(log.contains("restarting in"), "{log}");
    assert!(!log.contains("generation 1 stopping"), "{log}");
}

#[test]
fn a_stopped_generation_is_woken_to_honour_the_stop_signal() {
    let mut sockhold = Sockhold::command()
        .args([
            "-l",
            "127.0.0.1:0",
            "--stop-timeout",
            "5s",
            "--ready",
            "notify",
        ])
        .arg("--")
        .arg(test_child_bin())
        .args(["--ready-after", "0"])
        .start();
    sockhold.wait_for("generation 1 ready");
    let child = only_child(&sockhold);
    kill(child, Signal::SIGSTOP).unwrap();
    wait_for_state(child, 'T');
    sockhold.signal(Signal::SIGTERM);
    // SIGCONT follows SIGTERM, so the child dies of it: an honoured stop.
    let log = sockhold.exits_with(0);
    assert!(
        log.contains("generation 1 exited with signal SIGTERM"),
        "{log}"
    );
    assert!(!log.contains("did not stop within"), "{log}");
}

/// Connects to an `--inetd` child that writes its pid first, and returns
/// the connection and that pid.
fn connect_to_shell_child(sockhold: &Sockhold) -> (TcpStream, Pid) {
    let stream = TcpStream::connect(sockhold.tcp_address(0)).unwrap();
    stream.set_read_timeout(Some(WAIT)).unwrap();
    let mut line = String::new();
    BufReader::new(&stream).read_line(&mut line).unwrap();
    let pid: i32 = line
        .trim()
        .parse()
        .unwrap_or_else(|_| panic!("no pid line: {line:?}"));
    (stream, Pid::from_raw(pid))
}

#[test]
fn a_stopped_connection_child_is_woken_to_honour_the_stop_signal() {
    let mut sockhold = Sockhold::command()
        .args(["--accept", "--inetd", "--stop-timeout", "5s"])
        .args([
            "-l",
            "127.0.0.1:0",
            "--",
            "sh",
            "-c",
            "echo $$; exec sleep 100",
        ])
        .start();
    let (_stream, child) = connect_to_shell_child(&sockhold);
    kill(child, Signal::SIGSTOP).unwrap();
    wait_for_state(child, 'T');
    sockhold.signal(Signal::SIGTERM);
    let log = sockhold.exits_with(0);
    assert!(!log.contains("did not stop within"), "{log}");
}

/// One `stop` request on the control socket; returns the reply line and
/// the connection, which sockhold holds open until it exits.
fn control_stop(path: &Path) -> (String, UnixStream) {
    let mut stream = UnixStream::connect(path).unwrap();
    stream.set_read_timeout(Some(WAIT)).unwrap();
    stream.write_all(b"stop\n").unwrap();
    let mut line = String::new();
    BufReader::new(&stream).read_line(&mut line).unwrap();
    (line, stream)
}

#[test]
fn a_second_stop_request_in_accept_mode_waits_for_the_connections() {
    let dir = TempDir::new();
    let control = dir.join("ctl");
    let mut sockhold = Sockhold::command()
        .arg("--control")
        .arg(&control)
        .args(["--accept", "--inetd", "-l", "127.0.0.1:0", "--"])
        .args(["sh", "-c", "trap '' TERM; echo $$; exec cat"])
        .start();
    let (mut stream, _child) = connect_to_shell_child(&sockhold);
    stream.write_all(b"ping\n").unwrap();
    let mut echo = [0u8; 5];
    stream.read_exact(&mut echo).unwrap();
    assert_eq!(&echo, b"ping\n");
    let (first, _held1) = control_stop(&control);
    assert_eq!(first.trim(), "ok stopping");
    let (second, _held2) = control_stop(&control);
    assert_eq!(second.trim(), "ok stopping");
    // The child ignores TERM and ends when its client hangs up: cleanly,
    // because the second request did not SIGKILL it.
    stream.shutdown(Shutdown::Write).unwrap();
    let log = sockhold.exits_with(0);
    assert!(!log.contains("SIGKILL"), "{log}");
}

/// A first generation that never says READY=1, is given up on after
/// 300ms, and exits 0 on the SIGTERM that stops it.
fn never_ready_exiting_zero_on_stop(restart: &str) -> Sockhold {
    Sockhold::command()
        .args(["-l", "127.0.0.1:0", "--ready", "notify"])
        .args(["--ready-timeout", "300ms", "--restart", restart, "--"])
        .arg(test_child_bin())
        .args(["--never-ready", "--term-exit", "0"])
        .start()
}

#[test]
fn a_first_generation_that_never_got_ready_is_restarted_even_if_it_exits_zero() {
    let sockhold = never_ready_exiting_zero_on_stop("on-failure");
    sockhold.wait_for("generation 1 not ready after 300ms");
    sockhold.wait_for("generation 1 exited with status 0");
    sockhold.wait_for("generation 1 never became ready: a failed start");
    sockhold.wait_for("restarting in 100ms (restart 1)");
    sockhold.wait_for("generation 2 started");
}

#[test]
fn a_first_generation_that_never_got_ready_exits_non_zero_without_restarts() {
    let mut sockhold = never_ready_exiting_zero_on_stop("never");
    let log = sockhold.exits_with(1);
    assert!(
        log.contains("not restarting (--restart never): exiting with status 1"),
        "{log}"
    );
}
