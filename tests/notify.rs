//! The children's notify sockets: a `READY=1` from sockhold's user or root
//! counts, even when the sender has already exited.

use crate::harness::*;
use std::path::Path;
use std::process::Command;

/// One `READY=1` from a process that exits at once.
const ONE_SHOT_READY: &str = "import os, socket\n\
address = os.environ['NOTIFY_SOCKET']\n\
if address.startswith('@'):\n\
\x20   address = '\\0' + address[1:]\n\
socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM).sendto(b'READY=1', address)\n";

fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// `sockhold reload --control PATH`: whether it reports a successful reload.
fn reload_succeeds(ctl: &Path) -> bool {
    let output = Command::new(sockhold_bin())
        .args(["reload", "--control"])
        .arg(ctl)
        .output()
        .expect("run sockhold reload");
    output.status.success()
}

/// Starts `sh -c SCRIPT test_child` (with `env` set for sockhold, which
/// passes it on, and `args` for sockhold) under `--ready notify` with a
/// control socket; checks that the first generation was made ready by
/// `READY=1` and returns how many of `reloads` reloads succeeded.
fn ready_count(script: &str, env: &[(&str, &str)], args: &[&str], reloads: u32) -> u32 {
    let dir = TempDir::new();
    let ctl = dir.join("ctl");
    let mut builder = Sockhold::command();
    for (key, value) in env {
        builder = builder.env(key, value);
    }
    let sockhold = builder
        .args(args)
        .args(["-l", "127.0.0.1:0", "--ready", "notify"])
        .args(["--ready-timeout", "10s", "--control"])
        .arg(&ctl)
        .args(["--", "sh", "-c", script, test_child_bin()])
        .start();
    sockhold.wait_for("generation 1 started");
    // The first generation's next line says how its start went.
    let first = sockhold.wait_for("generation 1 ");
    assert!(
        first.contains("generation 1 ready: READY=1"),
        "at launch: {first}; log:\n{}",
        sockhold.log_text()
    );
    (0..reloads).filter(|_| reload_succeeds(&ctl)).count() as u32
}

/// `SENDER` run with sockhold (the wrapper's parent) stopped, so that the
/// sender has exited and been reaped before sockhold reads its message:
/// the race that a real short-lived helper loses now and then, lost every
/// time.
fn gone_before_read(sender: &str) -> String {
    format!("kill -STOP $PPID; {sender}; kill -CONT $PPID; exec \"$0\"")
}

#[test]
fn ready_from_systemd_notify_in_a_wrapper_counts_every_time() {
    if Command::new("systemd-notify")
        .arg("--version")
        .output()
        .is_err()
    {
        eprintln!("skipped: needs systemd-notify (systemd)");
        return;
    }
    // As root, systemd-notify sends in its parent's name (the wrapper,
    // still running); as any other user it cannot, and sends in its own.
    let as_a_user: &[&str] = if is_root() {
        &["--user", "nobody"]
    } else {
        &[]
    };
    // As written in a wrapper (systemd-notify then waits until sockhold has
    // read the message, a barrier, since systemd 246) ...
    let reloaded = ready_count("systemd-notify --ready; exec \"$0\"", &[], as_a_user, 20);
    assert_eq!(reloaded, 20, "reloads made ready by systemd-notify, of 20");
    // ... and without waiting, gone before sockhold reads.
    let reloaded = ready_count(
        &gone_before_read("systemd-notify --ready --no-block"),
        &[],
        as_a_user,
        20,
    );
    assert_eq!(
        reloaded, 20,
        "reloads made ready by systemd-notify --no-block, of 20"
    );
}

#[test]
fn ready_from_a_sender_that_exits_at_once_counts_every_time() {
    // The interpreter itself, not a version manager's wrapper script that
    // would cost more than the test, 21 times over.
    let python = Command::new("python3")
        .args(["-c", "import sys; print(sys.executable)"])
        .output()
        .expect("python3");
    let python = String::from_utf8_lossy(&python.stdout).trim().to_string();
    let ready = ready_count(
        &gone_before_read("\"$PYTHON\" -c \"$ONE_SHOT\""),
        &[("ONE_SHOT", ONE_SHOT_READY), ("PYTHON", &python)],
        &[],
        20,
    );
    assert_eq!(ready, 20, "reloads made ready by a one-shot sender, of 20");
}
