//! `--maintenance FILE`: while paused, or in a crash loop once no
//! generation has been ready for `--maintenance-after`, sockhold answers
//! connections itself with FILE's bytes, after reading the request, so
//! that no client gets a reset in place of the answer; once a generation
//! is ready again, the server answers.

use crate::harness::*;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

const ANSWER: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\nRetry-After: 5\r\nContent-Length: 12\r\nContent-Type: text/plain\r\nConnection: close\r\n\r\nmaintenance\n";

/// Sends `request`, then reads to EOF: a reset fails the read.
fn exchange(address: SocketAddr, request: &[u8]) -> std::io::Result<Vec<u8>> {
    let mut stream = TcpStream::connect_timeout(&address, Duration::from_secs(5))?;
    stream.set_read_timeout(Some(WAIT))?;
    stream.set_write_timeout(Some(WAIT))?;
    stream.write_all(request)?;
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer)?;
    Ok(answer)
}

#[test]
fn while_paused_every_request_gets_the_file_s_bytes_and_no_reset() {
    let dir = TempDir::new();
    let control = dir.join("ctl");
    let file = dir.join("503.http");
    std::fs::write(&file, ANSWER).unwrap();
    let sockhold = Sockhold::command()
        .args([
            "-l",
            "127.0.0.1:0",
            "-l",
            "udp:127.0.0.1:0",
            "--maintenance",
        ])
        .arg(&file)
        .arg("--control")
        .arg(&control)
        .args(["--", test_child_bin()])
        .start();
    sockhold.wait_for("generation 1 ready");
    let address = sockhold.tcp_address(0);
    let (code, status, _) = control_client(&["status"], &control);
    assert_eq!(code, 0);
    assert!(
        status.contains(r#""maintenance":{"answering":false,"answered":0}"#),
        "{status}"
    );

    let (code, _, stderr) = control_client(&["pause"], &control);
    assert_eq!(code, 0, "{stderr}");
    sockhold.wait_for("generation 1 exited");
    sockhold.wait_for("maintenance answering started (paused)");
    let mut post =
        b"POST /upload HTTP/1.1\r\nHost: test\r\nContent-Length: 102400\r\n\r\n".to_vec();
    post.extend(std::iter::repeat_n(b'x', 102_400));
    for n in 0..20 {
        let request: &[u8] = match n {
            7 => &post,
            // One that sends nothing and waits.
            13 => b"",
            _ => b"GET / HTTP/1.1\r\nHost: test\r\n\r\n",
        };
        let answer = exchange(address, request)
            .unwrap_or_else(|error| panic!("request {n}: {error} (a reset?)"));
        assert_eq!(answer, ANSWER, "request {n}");
    }
    let (code, status, _) = control_client(&["status"], &control);
    assert_eq!(code, 0);
    assert!(status.contains(r#""answering":true"#), "{status}");

    let (code, stdout, stderr) = control_client(&["resume"], &control);
    assert_eq!(code, 0, "{stderr}");
    let line = sockhold.wait_for("maintenance answering stopped");
    assert!(line.contains(": 20 connections answered"), "{line}");
    let resumed: i32 = stdout
        .strip_prefix("generation 2 pid ")
        .and_then(|pid| pid.parse().ok())
        .unwrap_or_else(|| panic!("unexpected answer {stdout:?}"));
    let answer = request_tcp(address).expect("the server answers again");
    assert_eq!(answer_pid(&answer), resumed);
    let (code, status, _) = control_client(&["status"], &control);
    assert_eq!(code, 0);
    assert!(
        status.contains(r#""maintenance":{"answering":false,"answered":20}"#),
        "{status}"
    );
}

#[test]
fn a_crash_loop_gets_the_maintenance_answer_until_the_child_is_fixed() {
    let dir = TempDir::new();
    let file = dir.join("503.http");
    std::fs::write(&file, ANSWER).unwrap();
    let fixed = dir.join("fixed");
    // Exits 1 at once until `fixed` exists, then is the test server.
    let script = r#"if [ -e "$1" ]; then exec "$2"; fi; exit 1"#;
    let sockhold = Sockhold::command()
        .args(["-l", "127.0.0.1:0", "--maintenance"])
        .arg(&file)
        .args(["--maintenance-after", "1s", "--restart-max-delay", "1s"])
        .args(["--", "sh", "-c", script, "sh"])
        .arg(&fixed)
        .arg(test_child_bin())
        .start();
    let line = sockhold.wait_for("maintenance answering started");
    assert!(line.contains("no generation has been ready for"), "{line}");
    let address = sockhold.tcp_address(0);
    // A request made while a child runs waits in the queue for the next
    // backoff; it never hangs.
    for n in 0..3 {
        let answer = exchange(address, b"GET / HTTP/1.1\r\nHost: test\r\n\r\n")
            .unwrap_or_else(|error| panic!("request {n}: {error}"));
        assert_eq!(answer, ANSWER, "request {n}");
    }

    std::fs::write(&fixed, b"").unwrap();
    sockhold.wait_for(" ready: ");
    // Stopped before the fixed generation was started, or any other.
    assert!(
        sockhold
            .log_text()
            .contains("maintenance answering stopped"),
        "{}",
        sockhold.log_text()
    );
    let answer = request_tcp(address).expect("the fixed server answers");
    assert!(answer.starts_with("pid="), "{answer:?}");
}

#[test]
fn a_missing_file_and_accept_mode_are_refused_with_one_line() {
    let (code, log) = run_to_exit(&[
        "--maintenance",
        "/nonexistent/503.http",
        "-l",
        "127.0.0.1:0",
        "--",
        "true",
    ]);
    assert_eq!(code, 66, "{log}");
    assert_eq!(log.trim().lines().count(), 1, "{log}");
    assert!(
        log.contains("cannot read --maintenance file '/nonexistent/503.http': no such file or directory (write the whole answer"),
        "{log}"
    );

    let dir = TempDir::new();
    let file = dir.join("503.http");
    std::fs::write(&file, ANSWER).unwrap();
    let file = file.to_str().unwrap();
    let (code, log) = run_to_exit(&[
        "--accept",
        "--maintenance",
        file,
        "-l",
        "127.0.0.1:0",
        "--",
        "cat",
    ]);
    assert_eq!(code, 64, "{log}");
    assert_eq!(log.trim().lines().count(), 1, "{log}");
    assert!(
        log.contains("--maintenance") && log.contains("--accept"),
        "{log}"
    );

    let (code, log) = run_to_exit(&[
        "--maintenance-after",
        "1s",
        "-l",
        "127.0.0.1:0",
        "--",
        "true",
    ]);
    assert_eq!(code, 64, "{log}");
    assert!(log.contains("--maintenance"), "{log}");
}
