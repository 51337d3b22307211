//! Exit status propagation and the restart policy.
//!
//! A child that is to end after serving for a while becomes ready by
//! notification before it serves (`--ready-after 0`): with a ready delay
//! instead, a slow start could make it end before ready, which is a
//! failed start and another story.

use crate::harness::*;
use nix::sys::signal::Signal;

#[test]
fn restart_never_exits_with_the_child_code() {
    let (code, log) = run_to_exit(&[
        "-l",
        "127.0.0.1:0",
        "--restart",
        "never",
        "--",
        test_child_bin(),
        "--exit-at-start",
        "3",
    ]);
    assert_eq!(code, 3, "{log}");
    assert!(
        log.contains("generation 1 exited with status 3 before ready"),
        "{log}"
    );
}

#[test]
fn death_by_signal_exits_128_plus_n() {
    let (code, log) = run_to_exit(&[
        "-l",
        "127.0.0.1:0",
        "--restart",
        "never",
        "--ready",
        "notify",
        "--",
        test_child_bin(),
        "--ready-after",
        "0",
        "--exit-after",
        "200",
        "--die-by-signal",
        "12",
    ]);
    assert_eq!(code, 140, "{log}");
    assert!(
        log.contains("exited on its own with signal SIGUSR2"),
        "{log}"
    );
}

#[test]
fn clean_exit_under_on_failure_exits_zero_without_restart() {
    let (code, log) = run_to_exit(&[
        "-l",
        "127.0.0.1:0",
        "--ready",
        "notify",
        "--",
        test_child_bin(),
        "--ready-after",
        "0",
        "--exit-after",
        "200",
        "--exit-code",
        "0",
    ]);
    assert_eq!(code, 0, "{log}");
    assert!(!log.contains("restarting in"), "{log}");
}

#[test]
fn crash_is_restarted_with_growing_backoff() {
    let sockhold = Sockhold::command()
        .args([
            "-l",
            "127.0.0.1:0",
            "--ready",
            "notify",
            "--",
            test_child_bin(),
            "--ready-after",
            "0",
            "--exit-after",
            "50",
            "--exit-code",
            "2",
        ])
        .start();
    sockhold.wait_for("restarting in 100ms (restart 1)");
    sockhold.wait_for("restarting in 200ms (restart 2)");
    sockhold.wait_for("restarting in 400ms (restart 3)");
    let pids = sockhold.child_pids();
    assert!(pids.len() >= 3, "{pids:?}");
}

#[test]
fn requested_stop_that_the_child_honours_exits_zero() {
    let mut sockhold = Sockhold::command()
        .args(["-l", "127.0.0.1:0", "--", test_child_bin()])
        .start();
    sockhold.wait_for("generation 1 started");
    request_tcp(sockhold.tcp_address(0)).unwrap();
    sockhold.signal(Signal::SIGTERM);
    sockhold.exits_with(0);
    assert!(
        sockhold
            .log_text()
            .contains("generation 1 exited with signal SIGTERM")
    );
}

#[test]
fn requested_stop_with_a_failing_child_exits_with_its_code() {
    let mut sockhold = Sockhold::command()
        .args([
            "-l",
            "127.0.0.1:0",
            "--",
            test_child_bin(),
            "--term-exit",
            "5",
        ])
        .start();
    sockhold.wait_for("generation 1 started");
    request_tcp(sockhold.tcp_address(0)).unwrap();
    sockhold.signal(Signal::SIGINT);
    sockhold.exits_with(5);
}

#[test]
fn missing_program_at_reload_fails_the_reload_only() {
    let dir = TempDir::new();
    let program = dir.join("server");
    std::fs::copy(test_child_bin(), &program).unwrap();
    let sockhold = Sockhold::command()
        .args(["-l", "127.0.0.1:0", "--ready", "100ms", "--"])
        .arg(&program)
        .arg("--graceful")
        .start();
    sockhold.wait_for("generation 1 ready");
    std::fs::remove_file(&program).unwrap();
    sockhold.signal(Signal::SIGHUP);
    let line = sockhold.wait_for("reload failed");
    assert!(
        line.contains("generation 2 could not start (command not found)"),
        "{line}"
    );
    request_tcp(sockhold.tcp_address(0)).unwrap();
}
