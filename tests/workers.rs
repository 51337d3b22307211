//! `--workers N`: N children per generation on the same sockets, each with
//! its own LISTEN_PID and slot; a killed worker replaced alone; rolling
//! reloads (one new worker at a time, an old one stopped per new one
//! ready) under a stream of new connections; `sockhold scale`.

use crate::harness::*;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

/// What each worker that answered said: pid -> its report fields.
/// Connections go to whichever worker accepts first, so this asks until
/// `count` distinct workers have answered (or gives up after many tries).
fn reports_of(address: SocketAddr, count: usize) -> HashMap<i32, HashMap<String, String>> {
    let mut seen = HashMap::new();
    for _ in 0..5000 {
        let answer = request_tcp(address).expect("a worker answers");
        seen.entry(answer_pid(&answer))
            .or_insert_with(|| report_fields(&answer));
        if seen.len() >= count {
            break;
        }
    }
    seen
}

fn slot_of(report: &HashMap<String, String>) -> &str {
    report
        .get("SOCKHOLD_WORKER")
        .map_or("UNSET", String::as_str)
}

#[test]
fn three_workers_answer_each_with_its_own_pid_slot_and_listen_pid() {
    let sockhold = Sockhold::command()
        .args(["-l", "127.0.0.1:0", "--workers", "3", "--"])
        .args([test_child_bin(), "--report"])
        .start();
    sockhold.wait_for("generation 1 ready");
    let reports = reports_of(sockhold.tcp_address(0), 3);
    assert_eq!(reports.len(), 3, "distinct workers answered: {reports:?}");
    let mut slots: Vec<&str> = reports.values().map(slot_of).collect();
    slots.sort_unstable();
    assert_eq!(slots, ["0", "1", "2"]);
    for (pid, report) in &reports {
        assert_eq!(report["LISTEN_PID"], pid.to_string(), "{report:?}");
        assert_eq!(report["LISTEN_FDS"], "1");
        assert_eq!(report["SOCKHOLD_GENERATION"], "1");
    }
}

#[test]
fn a_killed_worker_is_replaced_alone_in_its_slot_and_no_connection_fails() {
    let sockhold = Sockhold::command()
        .args(["-l", "127.0.0.1:0", "--workers", "3", "--"])
        .args([test_child_bin(), "--report"])
        .start();
    sockhold.wait_for("generation 1 ready");
    let address = sockhold.tcp_address(0);
    let before = reports_of(address, 3);
    assert_eq!(before.len(), 3, "{before:?}");
    let (&victim, victim_report) = before
        .iter()
        .find(|(_, report)| slot_of(report) == "1")
        .expect("the worker in slot 1 answered");
    let victim_slot = slot_of(victim_report).to_string();

    kill(Pid::from_raw(victim), Signal::SIGKILL).unwrap();
    sockhold.wait_for("generation 1 worker 1 exited on its own with signal");
    // From its end (a connection it had in hand is lost with it, as with
    // any server killed so) through its restart in its slot: every new
    // connection is answered.
    let stop = Arc::new(AtomicBool::new(false));
    let client = hammer(Arc::clone(&stop), move || request_tcp(address));
    let line = sockhold.wait_for("generation 1 worker 1 started: pid");
    let replacement: i32 = line.rsplit(' ').next().unwrap().parse().unwrap();
    // Its readiness is awaited, as at the start.
    sockhold.wait_for(&format!(
        "generation 1 worker 1 ready: accepting on fd 3 (pid {replacement})"
    ));
    // The replacement serves too, before the stream of connections ends.
    let after = reports_of(address, 3);
    stop_hammer(&stop, client);

    // The other two are the same processes; the replacement has the slot.
    for (pid, report) in &before {
        if *pid != victim {
            assert!(sockhold.child_is_running(Pid::from_raw(*pid)));
            assert!(
                after.contains_key(pid),
                "{pid} ({report:?}) gone: {after:?}"
            );
        }
    }
    let new = after
        .get(&replacement)
        .unwrap_or_else(|| panic!("replacement {replacement} did not answer: {after:?}"));
    assert_eq!(slot_of(new), victim_slot);
    assert_eq!(new["SOCKHOLD_GENERATION"], "1");
    assert_eq!(new["LISTEN_PID"], replacement.to_string());
    let log = sockhold.log_text();
    assert!(!log.contains("generation 2"), "no new generation: {log}");
}

#[test]
fn a_rolling_reload_under_a_stream_of_connections_fails_none_and_keeps_n_ready() {
    let dir = TempDir::new();
    let control = dir.join("ctl");
    // Each worker boots 300 ms (no READY=1): the rollout takes a while,
    // one worker at a time, and is seen by the observer alone.
    let sockhold = serving_test_child(
        &control,
        &["--workers", "3"],
        &["--boot", "300", "--graceful"],
    );
    let address = sockhold.tcp_address(0);
    let first = sockhold.child_pids();
    let stop = Arc::new(AtomicBool::new(false));
    let client = hammer(Arc::clone(&stop), move || request_tcp(address));
    let sampling = Arc::new(AtomicBool::new(false));
    let sampler = {
        let sampling = Arc::clone(&sampling);
        let control = control.clone();
        std::thread::spawn(move || {
            let mut samples = Vec::new();
            while !sampling.load(Ordering::SeqCst) {
                let (code, status, stderr) = control_client(&["status"], &control);
                assert_eq!(code, 0, "{stderr}");
                samples.push(worker_states(&status));
            }
            samples
        })
    };
    for generation in 2..=3 {
        let (code, out, err) = control_client(&["reload"], &control);
        assert_eq!(code, 0, "reload: {out} {err}");
        assert!(
            out.starts_with(&format!("generation {generation} pid")),
            "{out}"
        );
    }
    sampling.store(true, Ordering::SeqCst);
    let samples = sampler.join().unwrap();
    stop_hammer(&stop, client);
    // At every status sample: at least 3 ready, at most 3 + 1 running
    // (those stopping aside).
    assert!(samples.len() > 5, "{} samples", samples.len());
    let starting = samples
        .iter()
        .filter(|states| states.iter().any(|s| s == "starting"))
        .count();
    assert!(starting > 0, "no sample saw a rollout: {samples:?}");
    for states in &samples {
        let ready = states.iter().filter(|s| *s == "ready").count();
        let running = states.iter().filter(|s| *s != "stopping").count();
        assert!(ready >= 3 && running <= 4, "{states:?}");
    }
    // One at a time: each new worker was started only after the one
    // before it was ready.
    let log = sockhold.log_text();
    let position = |needle: &str| {
        log.lines()
            .position(|line| line.contains(needle))
            .unwrap_or_else(|| panic!("no {needle:?} in log:\n{log}"))
    };
    for slot in 1..3 {
        assert!(
            position(&format!("generation 2 worker {slot} started"))
                > position(&format!("generation 2 worker {} ready", slot - 1)),
            "{log}"
        );
        assert!(
            position(&format!("generation 1 worker {} stopping", slot - 1))
                > position(&format!("generation 2 worker {} ready", slot - 1)),
            "{log}"
        );
    }
    let now: Vec<i32> = (0..30)
        .map(|_| answer_pid(&request_tcp(address).unwrap()))
        .collect();
    for pid in now {
        assert!(
            !first.contains(&Pid::from_raw(pid)),
            "pid {pid} of generation 1 still answers"
        );
    }
}

#[test]
fn a_rollout_whose_new_worker_is_never_ready_fails_and_the_old_workers_serve_on() {
    let dir = TempDir::new();
    let control = dir.join("ctl");
    // Generation 2 never says READY=1 (--ready notify).
    let script = r#"if [ "$SOCKHOLD_GENERATION" = 2 ]; then exec "$0" --never-ready --graceful; fi
exec "$0" --ready-after 0 --graceful"#;
    let sockhold = Sockhold::command()
        .args(["-l", "127.0.0.1:0", "--workers", "2", "--ready", "notify"])
        .args(["--ready-timeout", "1s", "--control"])
        .arg(&control)
        .args(["--", "sh", "-c", script, test_child_bin()])
        .start();
    sockhold.wait_for("generation 1 ready");
    let address = sockhold.tcp_address(0);
    let first = sockhold.child_pids();
    let stop = Arc::new(AtomicBool::new(false));
    let client = hammer(Arc::clone(&stop), move || request_tcp(address));
    let (code, out, err) = control_client(&["reload"], &control);
    assert_ne!(code, 0, "{out}");
    assert!(
        err.contains("reload failed") && err.contains("generation 2 worker 0 not ready after 1s"),
        "{err}"
    );
    sockhold.wait_for("generation 2 worker 0 exited");
    stop_hammer(&stop, client);
    // Only one new worker was ever started: the rollout stopped there.
    let log = sockhold.log_text();
    assert!(!log.contains("generation 2 worker 1"), "{log}");
    assert_eq!(sockhold.child_pids().len(), first.len() + 1);
    for pid in &first {
        assert!(
            sockhold.child_is_running(*pid),
            "{pid} of generation 1 gone"
        );
    }
}

#[test]
fn scale_up_and_down_under_a_stream_of_connections_fails_none() {
    let dir = TempDir::new();
    let control = dir.join("ctl");
    let sockhold = serving_test_child(&control, &["--workers", "2"], &["--report", "--graceful"]);
    let address = sockhold.tcp_address(0);
    let stop = Arc::new(AtomicBool::new(false));
    let client = hammer(Arc::clone(&stop), move || request_tcp(address));

    let (code, out, err) = control_client(&["scale", "4"], &control);
    assert_eq!(
        (code, out.as_str()),
        (0, "scaled: generation 1 has 4 ready workers"),
        "{err}"
    );
    let (_, status, _) = control_client(&["status"], &control);
    assert_eq!(worker_states(&status), ["ready"; 4], "{status}");
    let reports = reports_of(address, 4);
    let mut slots: Vec<&str> = reports.values().map(slot_of).collect();
    slots.sort_unstable();
    assert_eq!(slots, ["0", "1", "2", "3"]);

    let (code, out, err) = control_client(&["scale", "1"], &control);
    assert_eq!(
        (code, out.as_str()),
        (0, "scaled: generation 1 has 1 ready workers"),
        "{err}"
    );
    // The three stopped ones exit, in any order.
    for _ in 1..4 {
        sockhold.wait_for("exited with status 0");
    }
    let (_, status, _) = control_client(&["status"], &control);
    assert_eq!(worker_states(&status), ["ready"], "{status}");
    stop_hammer(&stop, client);
    let log = sockhold.log_text();
    assert!(!log.contains("restarting it in its slot"), "{log}");
    // Bad counts are one clear line each, from the client itself.
    for bad in ["0", "1025", "x"] {
        let (code, _, err) = control_client(&["scale", bad], &control);
        assert_eq!(code, 64, "scale {bad}: {err}");
        assert!(err.contains("COUNT"), "{err}");
    }
}

#[test]
fn workers_with_accept_is_a_usage_error() {
    let (code, log) = run_to_exit(&[
        "--workers",
        "2",
        "--accept",
        "-l",
        "127.0.0.1:0",
        "--",
        "cat",
    ]);
    assert_eq!(code, 64, "{log}");
    assert!(
        log.contains("'--workers <N>' cannot be used with '--accept'"),
        "{log}"
    );
}

#[test]
fn with_ready_notify_a_generation_of_workers_is_ready_once_each_sent_ready() {
    let sockhold = Sockhold::command()
        .args(["-l", "127.0.0.1:0", "--workers", "3", "--ready", "notify"])
        .args(["--", test_child_bin(), "--ready-after", "20"])
        .start();
    // Each worker's READY=1 is traced to its slot by the sender's pid.
    let ready = sockhold.wait_for("generation 1 ready");
    assert!(
        ready.contains("all 3 workers ready, the last READY=1"),
        "{ready}"
    );
    let log = sockhold.log_text();
    for slot in 0..3 {
        assert!(
            log.contains(&format!("generation 1 worker {slot} ready: READY=1 after")),
            "{log}"
        );
    }
}

#[test]
fn status_lists_every_worker_with_its_slot_pid_and_generation() {
    let dir = TempDir::new();
    let control = dir.join("ctl");
    let sockhold = serving_test_child(&control, &["--workers", "2"], &[]);
    let (code, status, err) = control_client(&["status"], &control);
    assert_eq!(code, 0, "{err}");
    let pids = sockhold.child_pids();
    assert_eq!(pids.len(), 2);
    for (slot, pid) in pids.iter().enumerate() {
        let worker = format!(
            r#"{{"slot":{slot},"pid":{pid},"generation":1,"state":"ready","restarts":0,"ready_by":"accepting on fd 3 (pid {pid}) after "#
        );
        assert!(status.contains(&worker), "{worker} not in {status}");
    }
}

#[test]
fn a_new_worker_that_exits_fails_the_reload_and_the_old_workers_serve_on() {
    // Worker 1 of generation 2 exits at start; every other worker serves.
    let script = r#"if [ "$SOCKHOLD_GENERATION" = 2 ] && [ "$SOCKHOLD_WORKER" = 1 ]; then exit 5; fi
exec "$0" --ready-after 20 --graceful"#;
    let sockhold = Sockhold::command()
        .args(["-l", "127.0.0.1:0", "--workers", "3", "--ready", "notify"])
        .args(["--", "sh", "-c", script, test_child_bin()])
        .start();
    sockhold.wait_for("generation 1 ready");
    let address = sockhold.tcp_address(0);
    let first = sockhold.child_pids();
    let stop = Arc::new(AtomicBool::new(false));
    let client = hammer(Arc::clone(&stop), move || request_tcp(address));
    sockhold.signal(Signal::SIGHUP);
    sockhold.wait_for(
        "reload failed: generation 2 worker 1 exited with status 5 before ready; generation 1 keeps serving",
    );
    // Slot 0 had been handed over to generation 2: generation 1 starts
    // it again, and generation 2's worker 0 serves until that is ready.
    sockhold.wait_for("generation 1 worker 0 starting again in its slot: the reload failed");
    let line = sockhold.wait_for("generation 1 worker 0 started: pid");
    let refill = Pid::from_raw(line.rsplit(' ').next().unwrap().parse().unwrap());
    sockhold.wait_for("generation 1 worker 0 ready");
    sockhold.wait_for("generation 2 worker 0 stopping (generation 1 worker 0 is ready)");
    sockhold.wait_for("generation 2 worker 0 exited");
    stop_hammer(&stop, client);
    // Generation 2 is gone: generation 1 answers, slots 1 and 2 as the
    // same processes as before.
    let mut generation_1: Vec<Pid> = first[1..].to_vec();
    generation_1.push(refill);
    for pid in &generation_1 {
        assert!(
            sockhold.child_is_running(*pid),
            "{pid} of generation 1 gone"
        );
    }
    assert!(!sockhold.child_is_running(first[0]));
    for _ in 0..20 {
        let pid = answer_pid(&request_tcp(address).unwrap());
        assert!(
            generation_1.contains(&Pid::from_raw(pid)),
            "{pid} is not of generation 1"
        );
    }
}

#[test]
fn with_restart_never_sockhold_exits_with_the_first_failure_once_every_worker_is_gone() {
    // Slot 0 exits 3 first, slot 1 exits 0 last: the first failure counts.
    let script = r#"if [ "$SOCKHOLD_WORKER" = 0 ]; then set -- 2000 3; else set -- 4000 0; fi
exec "$0" --ready-after 0 --exit-after "$1" --exit-code "$2""#;
    let mut sockhold = Sockhold::command()
        .args(["-l", "127.0.0.1:0", "--workers", "2", "--ready", "notify"])
        .args(["--restart", "never", "--", "sh", "-c", script])
        .arg(test_child_bin())
        .start();
    sockhold.wait_for("generation 1 ready");
    let log = sockhold.exits_with(3);
    assert!(
        log.contains("generation 1 worker 0 exited on its own with status 3; not restarting it"),
        "{log}"
    );
}

#[test]
fn a_forwarded_signal_reaches_every_worker_and_a_stop_stops_all() {
    let mut sockhold = Sockhold::command()
        .args(["-l", "127.0.0.1:0", "--workers", "3", "--"])
        .args([test_child_bin(), "--log-signals"])
        .start();
    sockhold.wait_for("generation 1 ready");
    sockhold.signal(Signal::SIGUSR1);
    // One line per worker that got it.
    for _ in 0..3 {
        sockhold.wait_for("test_child: got SIGUSR1");
    }
    sockhold.signal(Signal::SIGTERM);
    sockhold.exits_with(0);
}
