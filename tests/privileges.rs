//! `--user`/`--group`: bind as root, then drop privileges for good, in
//! sockhold itself and so in every child; `--socket-owner`.

use crate::harness::{Sockhold, TempDir, request_tcp, run_to_exit, test_child_bin};
use nix::fcntl::{Flock, FlockArg};
use std::fs::File;
use std::net::{Ipv4Addr, TcpListener};
use std::os::linux::fs::MetadataExt;
use std::os::unix::fs::PermissionsExt;

/// A port below 1024 on 127.0.0.1 that was free when it was chosen, and
/// that no other run of these tests chooses while the claim is held.
struct PrivilegedPort {
    port: u16,
    /// An exclusive flock(2) on the port's claim file.
    _claim: Flock<File>,
}

/// Claims a port below 1024, for sockhold to bind later: the port cannot
/// be kept bound meanwhile (sockhold is to bind it itself, as root), so
/// another run of the suite could find it free too and pick it. Each
/// candidate has a claim file in /tmp (not $TMPDIR: every run must share
/// it), and a port is taken only with an exclusive lock on its file, held
/// for as long as the test runs; the kernel drops the lock when the test
/// process dies, however it dies. A claimed port is then test-bound, for
/// the processes that know nothing of the claims.
fn free_privileged_port() -> Option<PrivilegedPort> {
    (600..1024).rev().find_map(|port| {
        let file = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(format!("/tmp/sockhold-tests-port-{port}.lock"))
            .ok()?;
        let claim = Flock::lock(file, FlockArg::LockExclusiveNonblock).ok()?;
        TcpListener::bind((Ipv4Addr::LOCALHOST, port)).ok()?;
        Some(PrivilegedPort {
            port,
            _claim: claim,
        })
    })
}

/// The `Uid:`, `Gid:` or `Groups:` line of a /proc status file, after the
/// label.
fn status_field(status: &str, label: &str) -> String {
    status
        .lines()
        .find_map(|line| line.strip_prefix(label))
        .unwrap_or_else(|| panic!("no {label} in {status}"))
        .trim()
        .to_string()
}

#[test]
#[ignore = "needs root"]
fn binds_a_privileged_port_as_root_then_runs_as_nobody() {
    crate::harness::needs_root();
    // Declared before sockhold, so dropped after it: the claim outlives
    // sockhold's hold of the port, also when the test fails.
    let Some(claimed) = free_privileged_port() else {
        eprintln!("skipped: no free port below 1024 on 127.0.0.1");
        return;
    };
    let port = claimed.port;
    // The child tells who it runs as, then becomes the test server (exec
    // keeps the pid that LISTEN_PID names).
    let script = format!(
        "grep -E '^(Uid|Gid|Groups):' /proc/self/status | sed 's/^/child /' >&2; exec '{}'",
        test_child_bin()
    );
    // A socket file in a directory only root may write: sockhold cannot
    // remove it once it runs as nobody, and says so at exit.
    let dir = TempDir::new();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let mut sockhold = Sockhold::command()
        .args(["--user", "nobody", "-l"])
        .arg(format!("127.0.0.1:{port}"))
        .arg("-l")
        .arg(dir.join("app.sock"))
        .args(["--", "sh", "-c", &script])
        .start();
    sockhold.wait_for("running as uid 65534 gid 65534");
    let groups = sockhold.wait_for("child Groups:");
    let log = sockhold.log_text();
    let child_line = |label: &str| {
        log.lines()
            .find_map(|line| line.strip_prefix(&format!("child {label}")))
            .unwrap_or_else(|| panic!("no child {label} line in\n{log}"))
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ")
    };
    assert_eq!(child_line("Uid:"), "65534 65534 65534 65534");
    assert_eq!(child_line("Gid:"), "65534 65534 65534 65534");
    assert_eq!(
        groups.trim_end(),
        "child Groups:",
        "supplementary groups left"
    );
    let own = std::fs::read_to_string(format!("/proc/{}/status", sockhold.pid)).unwrap();
    let uids = status_field(&own, "Uid:");
    assert_eq!(
        uids.split_whitespace().collect::<Vec<_>>(),
        ["65534"; 4],
        "sockhold still has a privileged uid: {uids}"
    );
    assert_eq!(status_field(&own, "Groups:"), "");
    // The child serves the port that only root could bind.
    let answer = request_tcp(format!("127.0.0.1:{port}").parse().unwrap()).unwrap();
    assert!(answer.starts_with("pid="), "{answer}");
    sockhold.signal(nix::sys::signal::Signal::SIGTERM);
    sockhold.exits_with(0);
    assert!(
        sockhold.log_text().contains(&format!(
            "{} left in place: created before the privilege drop",
            dir.join("app.sock").display()
        )),
        "{}",
        sockhold.log_text()
    );
}

#[test]
#[ignore = "needs root"] // to give a file away
fn socket_owner_and_mode_are_set_on_the_file() {
    crate::harness::needs_root();
    let dir = TempDir::new();
    let path = dir.join("app.sock");
    let sockhold = Sockhold::command()
        .arg("-l")
        .arg(&path)
        .args(["--socket-owner", "nobody:nogroup", "--socket-mode", "660"])
        .args(["--", test_child_bin()])
        .start();
    sockhold.wait_for("generation 1 started");
    let meta = std::fs::symlink_metadata(&path).unwrap();
    assert_eq!((meta.st_uid(), meta.st_gid()), (65534, 65534));
    assert_eq!(meta.permissions().mode() & 0o777, 0o660);
}

#[test]
fn unknown_user_is_a_usage_error_before_anything_is_bound() {
    let dir = TempDir::new();
    let path = dir.join("app.sock");
    let (code, log) = run_to_exit(&[
        "--user",
        "no-such-user-here",
        "-l",
        path.to_str().unwrap(),
        "--",
        "true",
    ]);
    assert_eq!(code, 64, "{log}");
    assert!(log.contains("unknown user 'no-such-user-here'"), "{log}");
    assert!(!path.exists());
}

#[test]
#[ignore = "needs root"] // to start sockhold as another user
fn a_drop_that_cannot_be_done_exits_77_and_leaves_nothing_behind() {
    crate::harness::needs_root();
    let dir = TempDir::new();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
    let path = dir.join("app.sock");
    // As nobody, becoming root is refused at the first step.
    let mut sockhold = Sockhold::command()
        .uid(65534, 65534)
        .args(["--user", "root", "-l"])
        .arg(&path)
        .args(["--", "true"])
        .start();
    let status = sockhold.wait_exit();
    let log = sockhold.log_text();
    assert_eq!(status.code(), Some(77), "{log}");
    assert!(
        log.contains(
            "sockhold: error: cannot drop privileges to 'root': setgroups: operation not permitted"
        ),
        "{log}"
    );
    assert!(!path.exists(), "socket file left behind");
}
