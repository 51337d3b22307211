//! A child that calls shutdown(2) on a held listening socket (a common
//! graceful stop, and a mistake on a socket every generation shares):
//! sockhold sees it when the child exits, logs it once, and listens again
//! on the same address, so that connections after the reload are answered
//! and the TCP port stays sockhold's.

use crate::harness::*;
use nix::sys::signal::Signal;
use std::os::unix::fs::FileTypeExt;
use std::path::Path;

fn server(script: &str) -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/support/servers")
        .join(script)
        .to_str()
        .unwrap()
        .to_string()
}

/// Starts sockhold on `listen` with the server that shuts its listener
/// down at SIGTERM, reloads it once, and returns once generation 1 (which
/// shut the socket down on its way out) has exited.
fn reload_past_a_shutdown(listen: &std::ffi::OsStr) -> Sockhold {
    let sockhold = Sockhold::command()
        .arg("-l")
        .arg(listen)
        .args(["--", "python3", &server("shuts_down_socket.py")])
        .start();
    sockhold.wait_for("generation 1 ready");
    sockhold.signal(Signal::SIGHUP);
    sockhold.wait_for("generation 2 ready");
    // Logged after the check that the exit sets off.
    sockhold.wait_for("generation 1 exited");
    sockhold
}

/// The one error line about the shut-down socket (written before
/// `generation 1 exited`, which the test has seen).
fn shut_down_line(sockhold: &Sockhold) -> String {
    let log = sockhold.log_written_until_now();
    let lines: Vec<&str> = log
        .lines()
        .filter(|line| line.contains("was shut down by a child"))
        .collect();
    assert_eq!(lines.len(), 1, "one error line wanted; log:\n{log}");
    lines[0].to_string()
}

#[test]
fn a_child_that_shuts_the_tcp_listener_down_costs_no_connection_after_the_reload() {
    let mut sockhold = reload_past_a_shutdown("127.0.0.1:0".as_ref());
    let address = sockhold.tcp_address(0);
    let answer = request_tcp(address).expect("a connection after the reload is answered");
    answer_pid(&answer);
    let line = shut_down_line(&sockhold);
    assert!(
        line.contains(&format!("listening socket fd 3 (tcp {address})"))
            && line.contains("listening on it again"),
        "{line}"
    );
    // The port is still sockhold's: nobody else can take it.
    let taken = std::net::TcpListener::bind(address);
    assert!(taken.is_err(), "port {address} is free for anyone");
    sockhold.signal(Signal::SIGTERM);
    sockhold.exits_with(0);
}

#[test]
fn a_child_that_shuts_a_unix_listener_down_costs_no_connection_after_the_reload() {
    let dir = TempDir::new();
    let path = dir.join("shut.sock");
    let mut sockhold = reload_past_a_shutdown(path.as_os_str());
    let answer = request_unix(&path).expect("a connection after the reload is answered");
    answer_pid(&answer);
    let line = shut_down_line(&sockhold);
    assert!(
        line.contains(&format!("listening socket fd 3 (unix {})", path.display()))
            && line.contains("replaced by a new socket on the same path"),
        "{line}"
    );
    // Every later connection too, whichever generation serves it.
    for _ in 0..3 {
        request_unix(&path).expect("a later connection is answered");
    }
    sockhold.signal(Signal::SIGTERM);
    sockhold.exits_with(0);
    assert!(
        !std::fs::symlink_metadata(&path).is_ok_and(|meta| meta.file_type().is_socket()),
        "the new socket file is removed at exit as sockhold's own"
    );
}
