//! Unix socket files: stale ones replaced, live ones refused, mode applied
//! at creation, and the file removed at exit only if it is still ours.

use crate::harness::*;
use nix::sys::signal::Signal;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::os::unix::net::UnixListener;

#[test]
fn stale_socket_file_is_replaced() {
    let dir = TempDir::new();
    let path = dir.join("stale.sock");
    drop(UnixListener::bind(&path).unwrap());
    assert!(path.exists(), "a closed listener leaves its file behind");
    let sockhold = Sockhold::command()
        .arg("-l")
        .arg(&path)
        .args(["--", test_child_bin()])
        .start();
    sockhold.wait_for("removing stale socket file");
    sockhold.wait_for("generation 1 started");
    request_unix(&path).unwrap();
}

#[test]
fn live_socket_is_refused_and_left_alone() {
    let dir = TempDir::new();
    let path = dir.join("live.sock");
    let _live = UnixListener::bind(&path).unwrap();
    let (code, log) = run_to_exit(&["-l", path.to_str().unwrap(), "--", "true"]);
    assert_eq!(code, 71, "{log}");
    assert!(log.contains("already in use by another process"), "{log}");
    assert!(path.exists());
}

#[test]
fn regular_file_in_the_way_is_refused() {
    let dir = TempDir::new();
    let path = dir.join("data.sock");
    std::fs::write(&path, "precious").unwrap();
    let (code, log) = run_to_exit(&["-l", path.to_str().unwrap(), "--", "true"]);
    assert_eq!(code, 71, "{log}");
    assert!(log.contains("exists and is not a socket"), "{log}");
    assert_eq!(std::fs::read_to_string(&path).unwrap(), "precious");
}

#[test]
fn socket_file_gets_its_mode_and_is_removed_at_exit() {
    let dir = TempDir::new();
    let path = dir.join("mode.sock");
    let mut sockhold = Sockhold::command()
        .args(["--socket-mode", "600", "-l"])
        .arg(&path)
        .args(["--", test_child_bin()])
        .start();
    sockhold.wait_for("generation 1 started");
    let meta = std::fs::symlink_metadata(&path).unwrap();
    assert!(meta.file_type().is_socket());
    assert_eq!(meta.permissions().mode() & 0o777, 0o600);
    sockhold.signal(Signal::SIGTERM);
    sockhold.exits_with(0);
    assert!(!path.exists(), "socket file removed at exit");
}

#[test]
fn socket_file_replaced_by_someone_else_is_not_removed_at_exit() {
    let dir = TempDir::new();
    let path = dir.join("moved.sock");
    let mut sockhold = Sockhold::command()
        .arg("-l")
        .arg(&path)
        .args(["--", test_child_bin()])
        .start();
    sockhold.wait_for("generation 1 started");
    std::fs::remove_file(&path).unwrap();
    let _other = UnixListener::bind(&path).unwrap();
    sockhold.signal(Signal::SIGTERM);
    sockhold.wait_exit();
    assert!(path.exists(), "another process's socket file must survive");
}
