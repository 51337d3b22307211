//! The children's notify sockets: private to sockhold's user and root (a
//! socket file in a 0700 directory, gone with its generation and at exit),
//! a `READY=1` from such a sender counts even when the sender has already
//! exited, and a flood neither fills the log nor starves sockhold.

use crate::harness::*;
use std::os::linux::fs::MetadataExt;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// Floods a notify socket from uid and gid 65534: `sendto` each datagram
/// (`connect` = connect as root first, then drop to 65534 and `send` on
/// the connected socket, which the kernel no longer checks). Prints
/// `SENT REFUSED` (refused: EACCES or EPERM from the kernel) and its pid.
const FLOOD_AS_NOBODY: &str = "import os, socket, sys\n\
address, count, mode = sys.argv[1], int(sys.argv[2]), sys.argv[3]\n\
if address.startswith('@'):\n\
\x20   address = '\\0' + address[1:]\n\
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)\n\
s.settimeout(5)\n\
if mode == 'connect':\n\
\x20   s.connect(address)\n\
os.setgroups([])\n\
os.setgid(65534)\n\
os.setuid(65534)\n\
sent = refused = 0\n\
for _ in range(count):\n\
\x20   try:\n\
\x20       if mode == 'connect':\n\
\x20           s.send(b'STATUS=flood')\n\
\x20       else:\n\
\x20           s.sendto(b'STATUS=flood', address)\n\
\x20       sent += 1\n\
\x20   except PermissionError:\n\
\x20       refused += 1\n\
\x20   except socket.timeout:\n\
\x20       break\n\
print(sent, refused, os.getpid())\n";

/// One `READY=1` from a process that exits at once.
const ONE_SHOT_READY: &str = "import os, socket\n\
address = os.environ['NOTIFY_SOCKET']\n\
if address.startswith('@'):\n\
\x20   address = '\\0' + address[1:]\n\
socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM).sendto(b'READY=1', address)\n";

/// Sends `STATUS=...` forever, as fast as the socket takes them.
const ENDLESS_STATUS: &str = "import os, socket\n\
address = os.environ['NOTIFY_SOCKET']\n\
if address.startswith('@'):\n\
\x20   address = '\\0' + address[1:]\n\
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)\n\
s.sendto(b'READY=1', address)\n\
while True:\n\
\x20   s.sendto(b'STATUS=busy', address)\n";

fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// The first generation's NOTIFY_SOCKET, as `test_child --report` says.
fn notify_socket_of(sockhold: &Sockhold) -> String {
    let report = report_fields(&request_tcp(sockhold.tcp_address(0)).unwrap());
    report["NOTIFY_SOCKET"].clone()
}

/// A datagram from this (the test's) process.
fn send_from_here(address: &str, message: &[u8]) {
    use std::os::linux::net::SocketAddrExt;
    let socket = std::os::unix::net::UnixDatagram::unbound().unwrap();
    let result = match address.strip_prefix('@') {
        Some(name) => socket.send_to_addr(
            message,
            &std::os::unix::net::SocketAddr::from_abstract_name(name).unwrap(),
        ),
        None => socket.send_to(message, address),
    };
    result.unwrap();
}

/// What the flooding helper did.
struct Flood {
    sent: u64,
    refused: u64,
    pid: u32,
}

fn flood_as_nobody(address: &str, count: u32, mode: &str) -> Flood {
    let output = Command::new("python3")
        .args(["-c", FLOOD_AS_NOBODY, address, &count.to_string(), mode])
        .output()
        .expect("python3");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let fields: Vec<u64> = stdout
        .split_whitespace()
        .filter_map(|field| field.parse().ok())
        .collect();
    assert!(
        output.status.success() && fields.len() == 3,
        "flood helper: {} {stdout} {}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    Flood {
        sent: fields[0],
        refused: fields[1],
        pid: fields[2] as u32,
    }
}

/// After the flood, a marker from this process (root: trusted) on the same
/// socket; datagrams are read in order, so once sockhold has logged the
/// marker (debug level with -v, or the old refusal), it has read the flood.
fn wait_until_read(sockhold: &Sockhold, address: &str) {
    send_from_here(address, b"STATUS=flood-done");
    let refused_marker = format!("ignoring notify message from pid {}", std::process::id());
    loop {
        let line = sockhold.wait_for("generation 1");
        if line.contains("status: flood-done") || line.contains(&refused_marker) {
            return;
        }
    }
}

fn refusal_lines(log: &str, pid: u32) -> usize {
    let needle = format!("ignoring notify message from pid {pid}");
    log.lines().filter(|line| line.contains(&needle)).count()
}

/// The counts of "N more notify messages ignored" summaries.
fn summarised(log: &str) -> u64 {
    log.lines()
        .filter(|line| line.contains("more notify messages ignored"))
        .filter_map(|line| {
            let after = line.split("warning: ").nth(1)?;
            after.split_whitespace().next()?.parse::<u64>().ok()
        })
        .sum()
}

#[test]
#[ignore = "needs root"]
fn other_users_cannot_reach_the_notify_socket() {
    crate::harness::needs_root();
    let runtime = TempDir::new();
    let sockhold = Sockhold::command()
        .env("XDG_RUNTIME_DIR", runtime.path())
        .args([
            "-v",
            "-l",
            "127.0.0.1:0",
            "--",
            test_child_bin(),
            "--report",
        ])
        .start();
    sockhold.wait_for("generation 1 started");
    let address = notify_socket_of(&sockhold);
    let flood = flood_as_nobody(&address, 10_000, "sendto");
    wait_until_read(&sockhold, &address);
    let warnings = refusal_lines(&sockhold.log_text(), flood.pid);
    assert_eq!(
        (flood.sent, flood.refused, warnings),
        (0, 10_000, 0),
        "(sent, refused by the kernel, warning lines) for a flood from uid 65534 to {address}"
    );
}

#[test]
#[ignore = "needs root"]
fn a_flood_from_another_user_is_logged_once_with_a_count() {
    crate::harness::needs_root();
    // A sender that connected before it changed its user gets past the
    // directory's permissions: sockhold refuses its messages by uid and
    // says so once, then in counts.
    let runtime = TempDir::new();
    let mut sockhold = Sockhold::command()
        .env("XDG_RUNTIME_DIR", runtime.path())
        .args([
            "-v",
            "-l",
            "127.0.0.1:0",
            "--",
            test_child_bin(),
            "--report",
        ])
        .start();
    sockhold.wait_for("generation 1 started");
    let address = notify_socket_of(&sockhold);
    let started = Instant::now();
    let flood = flood_as_nobody(&address, 10_000, "connect");
    assert!(flood.sent > 0, "the kernel took none of the datagrams");
    wait_until_read(&sockhold, &address);
    // One line, and one more at most per second that the flood lasted.
    let allowed = 1 + started.elapsed().as_secs() as usize;
    let during = refusal_lines(&sockhold.log_text(), flood.pid);
    assert!(
        during <= allowed,
        "{during} warning lines for a flood of {} from uid 65534 (at most {allowed})",
        flood.sent
    );
    // The rest are counted, and the count is told by the time the
    // generation is gone.
    sockhold.signal(nix::sys::signal::Signal::SIGTERM);
    let log = sockhold.exits_with(0);
    let lines = refusal_lines(&log, flood.pid);
    assert_eq!(lines, during, "no more lines after the flood");
    assert_eq!(
        lines as u64 + summarised(&log),
        flood.sent,
        "every refused message is logged or counted"
    );
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
    // .ci/run installs systemd; without it, this fails naming the program.
    if let Err(error) = Command::new("systemd-notify").arg("--version").output() {
        panic!(
            "{}",
            crate::harness::cannot_run("systemd-notify".as_ref(), &error)
        );
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

/// The private directory of a NOTIFY_SOCKET path.
fn directory_of(address: &str) -> PathBuf {
    assert!(
        address.starts_with('/'),
        "NOTIFY_SOCKET is a socket file: {address}"
    );
    Path::new(address).parent().unwrap().to_path_buf()
}

#[test]
fn the_notify_socket_is_a_private_file_removed_with_its_generation_and_at_exit() {
    let runtime = TempDir::new();
    let dir = TempDir::new();
    let ctl = dir.join("ctl");
    let mut sockhold = Sockhold::command()
        .env("XDG_RUNTIME_DIR", runtime.path())
        .args(["-l", "127.0.0.1:0", "--control"])
        .arg(&ctl)
        .args(["--", test_child_bin(), "--report"])
        .start();
    sockhold.wait_for("generation 1 started");
    let first = notify_socket_of(&sockhold);
    let first_dir = directory_of(&first);
    if std::env::var_os("RUNTIME_DIRECTORY").is_none() {
        assert_eq!(first_dir.parent(), Some(runtime.path()), "{first}");
    }
    let meta = std::fs::metadata(&first_dir).unwrap();
    assert_eq!(meta.permissions().mode() & 0o7777, 0o700, "{first_dir:?}");
    assert_eq!(meta.st_uid(), nix::unistd::geteuid().as_raw());
    assert!(std::fs::metadata(&first).unwrap().file_type().is_socket());

    assert!(reload_succeeds(&ctl));
    sockhold.wait_for("generation 1 exited");
    // A request answered after that exit was handled: the generation is
    // forgotten by then.
    assert!(
        Command::new(sockhold_bin())
            .args(["status", "--control"])
            .arg(&ctl)
            .output()
            .unwrap()
            .status
            .success()
    );
    assert!(!first_dir.exists(), "{first_dir:?} outlived generation 1");
    let second_dir = directory_of(&notify_socket_of(&sockhold));
    assert_ne!(second_dir, first_dir);
    assert!(second_dir.exists());

    sockhold.signal(nix::sys::signal::Signal::SIGTERM);
    sockhold.exits_with(0);
    assert!(!second_dir.exists(), "{second_dir:?} outlived sockhold");
    let left: Vec<_> = std::fs::read_dir(runtime.path())
        .unwrap()
        .map(|entry| entry.unwrap().file_name())
        .collect();
    assert!(left.is_empty(), "left behind: {left:?}");
}

#[test]
#[ignore = "needs root"]
fn with_user_the_child_reaches_its_notify_socket() {
    crate::harness::needs_root();
    // Root's runtime directory, which nobody cannot write: sockhold, by
    // then nobody, makes its directory elsewhere, where its child (nobody
    // too) reaches it.
    let root_only = TempDir::new();
    std::fs::set_permissions(root_only.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
    let mut sockhold = Sockhold::command()
        .env("XDG_RUNTIME_DIR", root_only.path())
        .args(["--user", "nobody", "-l", "127.0.0.1:0", "--ready", "notify"])
        .args(["--", test_child_bin(), "--ready-after", "0", "--report"])
        .start();
    sockhold.wait_for("generation 1 ready: READY=1");
    let address = notify_socket_of(&sockhold);
    let directory = directory_of(&address);
    assert!(!directory.starts_with(root_only.path()), "{address}");
    assert_eq!(std::fs::metadata(&directory).unwrap().st_uid(), 65534);
    sockhold.signal(nix::sys::signal::Signal::SIGTERM);
    sockhold.exits_with(0);
    assert!(!directory.exists(), "{directory:?} outlived sockhold");
}

#[test]
fn a_child_flooding_its_notify_socket_does_not_starve_sockhold() {
    // A child that sends without pause keeps the socket readable all the
    // time: sockhold must still answer its control socket and stop.
    let dir = TempDir::new();
    let ctl = dir.join("ctl");
    let mut sockhold = Sockhold::command()
        .env("FLOOD", ENDLESS_STATUS)
        .args(["-l", "127.0.0.1:0", "--control"])
        .arg(&ctl)
        .args(["--", "sh", "-c", "python3 -c \"$FLOOD\" & exec \"$0\""])
        .arg(test_child_bin())
        .start();
    sockhold.wait_for("generation 1 ready");
    for _ in 0..5 {
        let asked = Instant::now();
        let reply = status_within(&ctl, Duration::from_secs(10));
        assert!(
            reply.is_some(),
            "no status reply within 10s during a flood (asked {:?} ago)",
            asked.elapsed()
        );
    }
    sockhold.signal(nix::sys::signal::Signal::SIGTERM);
    sockhold.exits_with(0);
}

/// `status` on the control socket, read with a deadline.
fn status_within(ctl: &Path, within: Duration) -> Option<String> {
    use std::io::{Read, Write};
    let mut stream = std::os::unix::net::UnixStream::connect(ctl).ok()?;
    stream.set_read_timeout(Some(within)).ok()?;
    stream.write_all(b"status\n").ok()?;
    let mut reply = String::new();
    stream.read_to_string(&mut reply).ok()?;
    (!reply.is_empty()).then_some(reply)
}
