//! `sockhold upgrade`: sockhold executes its binary again in its own place
//! (same pid, the same children, the same sockets), refuses a target that
//! does not answer the probe or a moment when something is in flight, and
//! leaks nothing over many upgrades.

use crate::harness::*;
use nix::unistd::Pid;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

fn status_pid(status: &str) -> i32 {
    let rest = status.split_once("{\"pid\":").expect("a pid").1;
    rest.split(',').next().unwrap().parse().unwrap()
}

fn fd_count(pid: i32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .count()
}

fn rss_kib(pid: i32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

fn upgrade_under_load(workers: &str) {
    let dir = TempDir::new();
    let control = dir.join("c.sock");
    let sockhold = Sockhold::command()
        .args(["-l", "127.0.0.1:0", "--workers", workers, "--control"])
        .arg(&control)
        .args(["--", test_child_bin(), "--graceful"])
        .start();
    sockhold.wait_for("generation 1 ready");
    let (_, before, _) = control_client(&["status"], &control);
    let pid = status_pid(&before);
    let children = sockhold.child_pids();
    let address = sockhold.tcp_address(0);
    let stop = Arc::new(AtomicBool::new(false));
    let client = hammer(Arc::clone(&stop), move || request_tcp(address));
    let (code, out, err) = control_client(&["upgrade"], &control);
    assert_eq!(code, 0, "{err}");
    assert_eq!(out, format!("upgraded: pid {pid} runs {}", sockhold_bin()));
    sockhold.wait_for("upgraded: pid");
    stop_hammer(&stop, client);
    for child in &children {
        assert_eq!(parent_of(*child), Some(Pid::from_raw(pid)), "{child}");
    }
    let (code, after, err) = control_client(&["status"], &control);
    assert_eq!(code, 0, "{err}");
    assert_eq!(status_pid(&after), pid);
    let (code, _, err) = control_client(&["reload"], &control);
    assert_eq!(code, 0, "{err}");
    let (code, _, err) = control_client(&["scale", "3"], &control);
    assert_eq!(code, 0, "{err}");
    let mut sockhold = sockhold;
    sockhold.signal(nix::sys::signal::Signal::SIGTERM);
    assert_eq!(sockhold.wait_exit().code(), Some(0));
}

#[test]
fn upgrade_keeps_the_pid_and_the_children_and_drops_no_connection() {
    upgrade_under_load("1");
}

#[test]
fn upgrade_with_two_workers_keeps_both_and_drops_no_connection() {
    upgrade_under_load("2");
}

#[test]
fn a_target_that_is_not_sockhold_is_refused_and_the_old_one_serves_on() {
    let dir = TempDir::new();
    let control = dir.join("c.sock");
    let sockhold = Sockhold::command()
        .args(["-l", "127.0.0.1:0", "--control"])
        .arg(&control)
        .args(["--", test_child_bin()])
        .start();
    sockhold.wait_for("generation 1 ready");
    let (_, before, _) = control_client(&["status"], &control);
    let pid = status_pid(&before);
    let not_executable = dir.join("plain");
    std::fs::write(&not_executable, "#!/bin/sh\n").unwrap();
    let other_version = dir.join("v2");
    std::fs::write(&other_version, "#!/bin/sh\necho sockhold upgrade-state 3\n").unwrap();
    let mut permissions = std::fs::metadata(&other_version).unwrap().permissions();
    std::os::unix::fs::PermissionsExt::set_mode(&mut permissions, 0o755);
    std::fs::set_permissions(&other_version, permissions).unwrap();
    for (target, reason) in [
        (
            "/bin/true".to_string(),
            "/bin/true did not answer the upgrade probe: is it sockhold?".to_string(),
        ),
        (
            not_executable.display().to_string(),
            format!(
                "cannot execute {}: permission denied",
                not_executable.display()
            ),
        ),
        (
            other_version.display().to_string(),
            "it reads state versions 3, this sockhold writes 2".to_string(),
        ),
    ] {
        let (code, _, err) = control_client(&["upgrade", "--exec", &target], &control);
        assert_ne!(code, 0, "{target}");
        assert!(err.to_lowercase().contains(&reason.to_lowercase()), "{err}");
        let (code, after, err) = control_client(&["status"], &control);
        assert_eq!(code, 0, "{err}");
        assert_eq!(status_pid(&after), pid);
    }
    let (code, _, err) = control_client(&["upgrade", "--exec", "relative/sockhold"], &control);
    assert_eq!(code, 64, "{err}");
}

#[test]
fn upgrade_with_unix_socket_pid_file_and_control_leaves_no_file_behind() {
    let dir = TempDir::new();
    let control = dir.join("c.sock");
    let socket = dir.join("u.sock");
    let pid_file = dir.join("p.pid");
    let mut sockhold = Sockhold::command()
        .arg("-l")
        .arg(&socket)
        .arg("--pid-file")
        .arg(&pid_file)
        .arg("--control")
        .arg(&control)
        .args(["--", test_child_bin()])
        .start();
    sockhold.wait_for("generation 1 ready");
    let (code, _, err) = control_client(&["upgrade"], &control);
    assert_eq!(code, 0, "{err}");
    request_unix(&socket).expect("the socket file still answers");
    assert!(pid_file.exists() && control.exists());
    sockhold.signal(nix::sys::signal::Signal::SIGTERM);
    assert_eq!(sockhold.wait_exit().code(), Some(0));
    for path in [&control, &socket, &pid_file] {
        assert!(!path.exists(), "{} left behind", path.display());
    }
}

#[test]
fn twenty_upgrades_leak_no_fd_and_no_memory() {
    let dir = TempDir::new();
    let control = dir.join("c.sock");
    let sockhold = Sockhold::command()
        .args(["-l", "127.0.0.1:0", "--workers", "2", "--control"])
        .arg(&control)
        .args(["--", test_child_bin()])
        .start();
    sockhold.wait_for("generation 1 ready");
    let (_, status, _) = control_client(&["status"], &control);
    let pid = status_pid(&status);
    let (code, _, err) = control_client(&["upgrade"], &control);
    assert_eq!(code, 0, "{err}");
    let fds = fd_count(pid);
    let rss = rss_kib(pid);
    for _ in 0..20 {
        let (code, _, err) = control_client(&["upgrade"], &control);
        assert_eq!(code, 0, "{err}");
    }
    assert_eq!(fd_count(pid), fds);
    assert!(rss_kib(pid) < rss + 2048, "{} KiB, was {rss}", rss_kib(pid));
}

#[test]
fn upgrade_during_a_reload_is_refused_with_the_reason() {
    let dir = TempDir::new();
    let control = dir.join("c.sock");
    let sockhold = Sockhold::command()
        .args(["-l", "127.0.0.1:0", "--control"])
        .arg(&control)
        .args(["--", test_child_bin(), "--boot", "2000"])
        .start();
    sockhold.wait_for("generation 1 ready");
    sockhold.signal(nix::sys::signal::Signal::SIGHUP);
    sockhold.wait_for("generation 2 started");
    let (code, _, err) = control_client(&["upgrade"], &control);
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("a reload is in flight (generation 2 is starting)"),
        "{err}"
    );
    sockhold.wait_for("generation 2 ready");
}

#[test]
fn under_a_service_manager_an_upgrade_is_reloading_then_ready_with_the_same_main_pid() {
    let dir = TempDir::new();
    let control = dir.join("c.sock");
    let notify = FakeNotify::bind(&dir.join("notify"));
    let sockhold = Sockhold::command()
        .env("NOTIFY_SOCKET", dir.join("notify"))
        .args(["-l", "127.0.0.1:0", "--ready", "notify", "--control"])
        .arg(&control)
        .args(["--", test_child_bin(), "--ready-after", "0"])
        .start();
    sockhold.wait_for("generation 1 ready");
    let child = sockhold.child_pids()[0];
    let serving = format!("generation 1 serving (pid {child})");
    assert_eq!(notify.next(), format!("READY=1\nSTATUS={serving}"));
    let (code, out, err) = control_client(&["upgrade"], &control);
    assert_eq!(code, 0, "{out} {err}");
    let reloading = notify.next();
    assert!(
        reloading.starts_with("RELOADING=1\nMONOTONIC_USEC=")
            && reloading.ends_with("\nSTATUS=upgrading sockhold"),
        "{reloading}"
    );
    // The new binary says it serves: the same child, and no MAINPID= (the
    // pid did not change).
    assert_eq!(notify.next(), format!("READY=1\nSTATUS={serving}"));
    // A refused upgrade says nothing to the service manager.
    let (code, _, err) = control_client(&["upgrade", "--exec", "/bin/true"], &control);
    assert_ne!(code, 0);
    assert!(err.contains("did not answer the upgrade probe"), "{err}");
    let mut sockhold = sockhold;
    sockhold.signal(nix::sys::signal::Signal::SIGTERM);
    assert_eq!(notify.next(), "STOPPING=1\nSTATUS=stopping");
    assert_eq!(sockhold.wait_exit().code(), Some(0));
}
