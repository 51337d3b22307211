//! `sockhold pause` and `resume`: the server stops, its sockets stay, and
//! the connections made meanwhile wait in the queue and are answered by
//! the generation that resume starts.

use crate::harness::*;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

/// sockhold on a loopback port with its control socket at `control`,
/// test_child as the command (graceful: at the pause it finishes the
/// connection in hand), generation 1 ready.
fn serving(control: &std::path::Path) -> Sockhold {
    let sockhold = Sockhold::command()
        .args(["-l", "127.0.0.1:0", "--control"])
        .arg(control)
        .args(["--", test_child_bin(), "--graceful"])
        .start();
    sockhold.wait_for("generation 1 ready");
    sockhold
}

#[test]
fn connections_made_while_paused_are_answered_after_resume() {
    let dir = TempDir::new();
    let control = dir.join("ctl");
    let sockhold = serving(&control);
    let address = sockhold.tcp_address(0);
    let stop = Arc::new(AtomicBool::new(false));
    let load = hammer(stop.clone(), move || request_tcp(address));

    let (code, stdout, stderr) = control_client(&["pause"], &control);
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(stdout, "paused: generation 1 stopping");
    sockhold.wait_for("generation 1 exited");
    let (code, status, _) = control_client(&["status"], &control);
    assert_eq!(code, 0);
    assert!(status.contains(r#""state":"paused""#), "{status}");
    assert!(!status.contains(r#""paused_seconds":null"#), "{status}");
    assert!(
        status.contains(r#""generations":[]"#),
        "nothing runs: {status}"
    );

    // Made while nothing runs: the kernel completes them, and they wait
    // in the queue; none is refused.
    let waiting: Vec<std::net::TcpStream> = (0..5)
        .map(|_| std::net::TcpStream::connect(address).expect("not refused while paused"))
        .collect();
    // The pause lasts 3 s: the scenario (a short swap), not a wait for
    // an event.
    std::thread::sleep(std::time::Duration::from_secs(3));
    let (code, _, stderr) = control_client(&["reload"], &control);
    assert_ne!(code, 0);
    assert!(
        stderr.contains("sockhold is paused: resume it"),
        "a reload while paused says what to do: {stderr}"
    );
    assert!(
        !sockhold.log_text().contains("generation 2"),
        "a pause restarts nothing"
    );

    let (code, stdout, stderr) = control_client(&["resume"], &control);
    assert_eq!(code, 0, "{stderr}");
    let resumed: i32 = stdout
        .strip_prefix("generation 2 pid ")
        .and_then(|pid| pid.parse().ok())
        .unwrap_or_else(|| panic!("unexpected answer {stdout:?}"));
    for mut connection in waiting {
        connection
            .set_read_timeout(Some(std::time::Duration::from_secs(10)))
            .unwrap();
        let mut answer = String::new();
        std::io::Read::read_to_string(&mut connection, &mut answer).expect("answered after resume");
        assert_eq!(answer_pid(&answer), resumed);
    }
    stop.store(true, Ordering::SeqCst);
    let (answered, failures, pids) = load.join().unwrap();
    assert!(failures.is_empty(), "{failures:?}");
    assert!(answered > 0);
    assert!(pids.contains(&resumed), "{pids:?}");
    let (code, status, _) = control_client(&["status"], &control);
    assert_eq!(code, 0);
    assert!(status.contains(r#""state":"running""#), "{status}");
    assert!(status.contains(r#""cause":"resume""#), "{status}");
}

#[test]
fn resume_when_not_paused_is_refused_and_pause_in_accept_mode_too() {
    let dir = TempDir::new();
    let control = dir.join("ctl");
    let sockhold = serving(&control);
    let (code, _, stderr) = control_client(&["resume"], &control);
    assert_eq!(code, 1, "{stderr}");
    assert!(stderr.contains("not paused"), "{stderr}");
    drop(sockhold);

    let control = dir.join("accept.ctl");
    let sockhold = Sockhold::command()
        .args(["--accept", "-l", "127.0.0.1:0", "--control"])
        .arg(&control)
        .args(["--", test_child_bin()])
        .start();
    sockhold.wait_for("accepting connections");
    let (code, _, stderr) = control_client(&["pause"], &control);
    assert_eq!(code, 1, "{stderr}");
    assert!(stderr.contains("--accept has none"), "{stderr}");
}
