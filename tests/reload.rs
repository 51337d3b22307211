//! Generations: zero-downtime reloads, failed reloads, queued reloads.

use crate::harness::*;
use nix::sys::signal::Signal;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

#[test]
fn reload_under_load_drops_no_connection() {
    let dir = TempDir::new();
    let unix_path = dir.join("zero.sock");
    let sockhold = Sockhold::command()
        .args(["-l", "127.0.0.1:0", "-l"])
        .arg(&unix_path)
        .args([
            "--ready",
            "notify",
            "--",
            test_child_bin(),
            "--ready-after",
            "20",
            "--graceful",
        ])
        .start();
    sockhold.wait_for("generation 1 ready");
    let tcp = sockhold.tcp_address(0);
    let stop = Arc::new(AtomicBool::new(false));
    let tcp_client = hammer(Arc::clone(&stop), move || request_tcp(tcp));
    let unix_client = {
        let path = unix_path.clone();
        hammer(Arc::clone(&stop), move || request_unix(&path))
    };
    for generation in 2..=21 {
        sockhold.signal(Signal::SIGHUP);
        sockhold.wait_for(&format!("generation {generation} ready"));
        sockhold.wait_for(&format!("generation {} exited", generation - 1));
    }
    stop.store(true, Ordering::SeqCst);
    for (name, client) in [("tcp", tcp_client), ("unix", unix_client)] {
        let (answered, failures, pids) = client.join().unwrap();
        assert!(
            failures.is_empty(),
            "{name}: {} failed connections: {:?}",
            failures.len(),
            &failures[..failures.len().min(5)]
        );
        assert!(answered > 20, "{name}: only {answered} answers");
        assert!(
            pids.len() >= 3,
            "{name}: only {} distinct children answered",
            pids.len()
        );
    }
}

#[test]
fn reload_whose_child_exits_at_start_keeps_the_old_child_serving() {
    let dir = TempDir::new();
    let args_file = dir.join("args");
    std::fs::write(&args_file, "--ready-after 0 --graceful").unwrap();
    // The command reads its arguments from a file, so the next generation
    // can be told to fail. Readiness by notification: a generation that
    // exits at start is never ready, however slowly it gets there.
    let sockhold = Sockhold::command()
        .args([
            "-l",
            "127.0.0.1:0",
            "--ready",
            "notify",
            "--",
            "sh",
            "-c",
            "exec \"$0\" $(cat \"$1\")",
        ])
        .arg(test_child_bin())
        .arg(&args_file)
        .start();
    sockhold.wait_for("generation 1 ready");
    let address = sockhold.tcp_address(0);
    let first = answer_pid(&request_tcp(address).unwrap());
    std::fs::write(&args_file, "--exit-at-start 4").unwrap();
    sockhold.signal(Signal::SIGHUP);
    let line = sockhold.wait_for("reload failed");
    assert!(
        line.contains("generation 2 exited with status 4 before ready; generation 1 keeps serving"),
        "{line}"
    );
    for _ in 0..20 {
        assert_eq!(answer_pid(&request_tcp(address).unwrap()), first);
    }
    // A later, good reload still works.
    std::fs::write(&args_file, "--ready-after 0 --graceful").unwrap();
    sockhold.signal(Signal::SIGHUP);
    sockhold.wait_for("generation 3 ready");
    sockhold.wait_for("generation 1 exited");
    assert_ne!(answer_pid(&request_tcp(address).unwrap()), first);
}

#[test]
fn reload_whose_child_never_becomes_ready_is_stopped_and_the_old_keeps_serving() {
    let dir = TempDir::new();
    let args_file = dir.join("args");
    std::fs::write(&args_file, "--ready-after 0 --graceful").unwrap();
    let sockhold = Sockhold::command()
        .args([
            "-l",
            "127.0.0.1:0",
            "--ready",
            "notify",
            "--ready-timeout",
            "700ms",
            "--",
        ])
        .args(["sh", "-c", "exec \"$0\" $(cat \"$1\")"])
        .arg(test_child_bin())
        .arg(&args_file)
        .start();
    sockhold.wait_for("generation 1 ready");
    let address = sockhold.tcp_address(0);
    let first = answer_pid(&request_tcp(address).unwrap());
    std::fs::write(&args_file, "--never-ready --graceful").unwrap();
    sockhold.signal(Signal::SIGHUP);
    sockhold.wait_for("generation 2 started");
    // While generation 2 runs (and even accepts), only readiness decides:
    // the old one is not stopped.
    let line = sockhold.wait_for("reload failed");
    assert!(
        line.contains("generation 2 not ready after 700ms; generation 1 keeps serving"),
        "{line}"
    );
    sockhold.wait_for("generation 2 exited");
    for _ in 0..20 {
        assert_eq!(answer_pid(&request_tcp(address).unwrap()), first);
    }
    assert!(!sockhold.log_text().contains("generation 1 stopping"));
}

#[test]
fn hup_during_a_reload_queues_one_more_and_no_more() {
    let sockhold = Sockhold::command()
        .args(["-l", "127.0.0.1:0", "--ready", "notify", "--"])
        .args([test_child_bin(), "--ready-after", "300", "--graceful"])
        .start();
    sockhold.wait_for("generation 1 ready");
    sockhold.signal(Signal::SIGHUP);
    sockhold.wait_for("generation 2 started");
    // Signals of one kind coalesce, so send one at a time and wait for
    // each to be seen.
    sockhold.signal(Signal::SIGHUP);
    sockhold.wait_for("reload queued");
    sockhold.signal(Signal::SIGHUP);
    sockhold.wait_for("reload already queued");
    sockhold.wait_for("generation 2 ready");
    sockhold.wait_for("generation 3 ready");
    sockhold.wait_for("generation 2 exited");
    // Nothing else is queued: stop now and check no generation 4 appeared.
    let mut sockhold = sockhold;
    sockhold.signal(Signal::SIGTERM);
    sockhold.exits_with(0);
    let log = sockhold.log_text();
    assert!(!log.contains("generation 4"), "{log}");
    assert!(log.contains("reload already queued"), "{log}");
}

/// sockhold with a 300ms stop timeout, once its child (which ignores
/// SIGTERM) is ready.
fn ready_child_ignoring_term() -> Sockhold {
    let sockhold = Sockhold::command()
        .args([
            "-l",
            "127.0.0.1:0",
            "--stop-timeout",
            "300ms",
            "--ready",
            "100ms",
        ])
        .args(["--", test_child_bin(), "--ignore-term"])
        .start();
    sockhold.wait_for("generation 1 ready");
    sockhold
}

#[test]
fn child_ignoring_term_is_killed_after_the_stop_timeout() {
    let mut sockhold = ready_child_ignoring_term();
    let child = sockhold.child_pids()[0];
    sockhold.signal(Signal::SIGTERM);
    let line = sockhold.wait_for("did not stop within 300ms");
    assert!(line.contains(&format!("SIGKILL to pid {child}")), "{line}");
    // Killed, not honoured: 128 + 9.
    sockhold.exits_with(137);
    assert!(!sockhold.child_is_running(child));
}

#[test]
fn old_generation_ignoring_term_is_killed_after_the_stop_timeout_on_reload() {
    let sockhold = ready_child_ignoring_term();
    let old = sockhold.child_pids()[0];
    sockhold.signal(Signal::SIGHUP);
    sockhold.wait_for("generation 2 ready");
    sockhold.wait_for(&format!(
        "generation 1 did not stop within 300ms: SIGKILL to pid {old}"
    ));
    sockhold.wait_for("generation 1 exited with signal SIGKILL");
}
