//! `sockhold upgrade` while `--maintenance` answers: the connections being
//! answered are carried to the new binary, which ends their conversations,
//! and answering goes on without a reset or a refused connection.

use crate::harness::*;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

const ANSWER: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 12\r\nConnection: close\r\n\r\nmaintenance\n";
const REQUEST: &[u8] = b"GET / HTTP/1.1\r\nHost: test\r\n\r\n";

fn exchange(address: SocketAddr) -> std::io::Result<Vec<u8>> {
    let mut stream = TcpStream::connect_timeout(&address, Duration::from_secs(5))?;
    stream.set_read_timeout(Some(WAIT))?;
    stream.write_all(REQUEST)?;
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer)?;
    Ok(answer)
}

#[test]
fn upgrade_while_answering_carries_the_connections_being_answered() {
    let dir = TempDir::new();
    let control = dir.join("c.sock");
    let file = dir.join("503.http");
    std::fs::write(&file, ANSWER).unwrap();
    let sockhold = Sockhold::command()
        .args(["-l", "127.0.0.1:0", "--maintenance"])
        .arg(&file)
        .arg("--control")
        .arg(&control)
        .args(["--", test_child_bin()])
        .start();
    sockhold.wait_for("generation 1 ready");
    let address = sockhold.tcp_address(0);
    let (code, _, err) = control_client(&["pause"], &control);
    assert_eq!(code, 0, "{err}");
    sockhold.wait_for("maintenance answering started (paused)");
    let fds = fd_count(sockhold.pid);

    // Answered and shut down for writing, its conversation waits for the
    // client to close: in flight across the upgrade.
    let mut held = TcpStream::connect(address).unwrap();
    held.set_read_timeout(Some(WAIT)).unwrap();
    held.write_all(REQUEST).unwrap();
    let mut answer = Vec::new();
    held.read_to_end(&mut answer).unwrap();
    assert_eq!(answer, ANSWER);
    assert_eq!(fd_count(sockhold.pid), fds + 1, "the held connection");

    let stop = Arc::new(AtomicBool::new(false));
    let clients = {
        let stop = Arc::clone(&stop);
        std::thread::spawn(move || {
            let mut answered = 0;
            let mut failed = Vec::new();
            while !stop.load(Ordering::SeqCst) {
                match exchange(address) {
                    Ok(answer) if answer == ANSWER => answered += 1,
                    Ok(other) => failed.push(format!("{:?}", String::from_utf8_lossy(&other))),
                    Err(error) => failed.push(error.to_string()),
                }
            }
            (answered, failed)
        })
    };
    let (code, out, err) = control_client(&["upgrade"], &control);
    assert_eq!(code, 0, "{out} {err}");
    let line = sockhold.wait_for("upgraded: pid");
    assert!(line.contains("generation none (paused)"), "{line}");
    stop.store(true, Ordering::SeqCst);
    let (answered, failed) = clients.join().unwrap();
    assert!(
        failed.is_empty(),
        "{} failed: {:?}",
        failed.len(),
        &failed[..failed.len().min(3)]
    );
    assert!(answered > 0);

    // The new binary ends the carried conversation when the client
    // closes: the connection is counted as answered (a connection is
    // counted once closed), and its fd goes.
    let (_, before, _) = control_client(&["status"], &control);
    drop(held);
    let counted = format!(
        r#""maintenance":{{"answering":true,"answered":{}}}"#,
        answered + 1
    );
    let mut status = String::new();
    // No event tells of the close but the count: looked at, bounded.
    for _ in 0..200 {
        status = control_client(&["status"], &control).1;
        if status.contains(&counted) {
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(
        status.contains(&counted),
        "{status} (before the close: {before})"
    );
    assert_eq!(fd_count(sockhold.pid), fds);

    let (code, out, err) = control_client(&["resume"], &control);
    assert_eq!(code, 0, "{out} {err}");
    let line = sockhold.wait_for("maintenance answering stopped");
    assert!(
        line.contains(&format!(": {} connections answered", answered + 1)),
        "{line}"
    );
    let resumed = out
        .strip_prefix("generation 2 pid ")
        .unwrap_or_else(|| panic!("{out:?}"));
    let answer = request_tcp(address).expect("the server answers again");
    assert_eq!(answer_pid(&answer).to_string(), resumed);
    let mut sockhold = sockhold;
    sockhold.signal(nix::sys::signal::Signal::SIGTERM);
    assert_eq!(sockhold.wait_exit().code(), Some(0));
}
