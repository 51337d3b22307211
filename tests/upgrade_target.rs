//! The target of `sockhold upgrade`: probed while sockhold serves on (and
//! killed if it does not answer); one that takes the state but cannot
//! take it over executes the old binary again (from the fd the old one
//! left it), which carries on with everything, and the client hears why;
//! a path the request line cannot carry is a usage error.

use crate::harness::*;
use nix::unistd::Pid;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

/// A stand-in for a newer sockhold that reads the arguments differently:
/// it answers the probe as sockhold does, but when executed with the
/// state it runs sockhold with one `-l` more than the state holds.
fn wrapper_naming_one_socket_more(dir: &TempDir) -> std::path::PathBuf {
    let path = dir.join("sockhold-next");
    write_executable(
        &path,
        &format!(
            "#!/usr/bin/python3\n\
             import os, sys\n\
             sockhold = {:?}\n\
             args = sys.argv[1:]\n\
             if 'SOCKHOLD_UPGRADE_STATE' in os.environ:\n\
             \x20   args = ['-l', '127.0.0.1:0'] + args\n\
             os.execv(sockhold, [sockhold] + args)\n",
            sockhold_bin()
        ),
    );
    path
}

#[test]
fn a_new_binary_that_cannot_take_over_goes_back_to_the_old_one_and_nothing_is_lost() {
    let dir = TempDir::new();
    let control = dir.join("c.sock");
    let sockhold = serving_test_child(&control, &["--workers", "2"], &["--graceful"]);
    let (_, before, _) = control_client(&["status"], &control);
    let pid = status_pid(&before);
    let fds = fd_count(pid);
    let children = sockhold.child_pids();
    let address = sockhold.tcp_address(0);
    let stop = Arc::new(AtomicBool::new(false));
    let client = hammer(Arc::clone(&stop), move || request_tcp(address));
    let next = wrapper_naming_one_socket_more(&dir);
    let (code, out, err) = control_client(&["upgrade", "--exec", next.to_str().unwrap()], &control);
    assert_eq!(code, 1, "{out} {err}");
    assert!(
        err.contains("the state holds 1 sockets, the arguments name 2 (the old binary serves on"),
        "{err}"
    );
    sockhold.wait_for("going back to the old binary");
    sockhold.wait_for(&format!("pid {pid} runs {} again", sockhold_bin()));
    stop_hammer(&stop, client);
    for child in &children {
        assert_eq!(parent_of(*child), Some(Pid::from_raw(pid)), "{child}");
    }
    assert_eq!(sockhold.child_pids(), children, "nothing was started again");
    let (code, after, err) = control_client(&["status"], &control);
    assert_eq!(code, 0, "{err}");
    assert_eq!(status_pid(&after), pid);
    assert!(after.contains("\"generation\":1"), "{after}");
    // Neither the state nor the fallback binary's fd is left open.
    assert_eq!(fd_count(pid), fds);
    // The old binary upgrades as before, and reloads.
    let (code, out, err) = control_client(&["upgrade"], &control);
    assert_eq!(code, 0, "{err}");
    assert_eq!(out, format!("upgraded: pid {pid} runs {}", sockhold_bin()));
    let (code, _, err) = control_client(&["reload"], &control);
    assert_eq!(code, 0, "{err}");
    let mut sockhold = sockhold;
    sockhold.signal(nix::sys::signal::Signal::SIGTERM);
    assert_eq!(sockhold.wait_exit().code(), Some(0));
}

/// A target that, as the probe, waits for a line on `fifo` (or forever)
/// before it answers as sockhold.
fn slow_to_answer(dir: &TempDir, fifo: &std::path::Path) -> std::path::PathBuf {
    let path = dir.join("sockhold-slow");
    write_executable(
        &path,
        &format!(
            "#!/bin/sh\n\
             if [ \"$SOCKHOLD_UPGRADE_PROBE\" = 1 ]; then read line < '{}'; fi\n\
             exec '{}' \"$@\"\n",
            fifo.display(),
            sockhold_bin()
        ),
    );
    path
}

#[test]
fn sockhold_serves_on_while_the_target_is_probed() {
    let dir = TempDir::new();
    let control = dir.join("c.sock");
    let fifo = dir.join("go");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
    let sockhold = serving_test_child(&control, &[], &[]);
    let target = slow_to_answer(&dir, &fifo);
    let upgrading = std::process::Command::new(sockhold_bin())
        .args([
            "upgrade",
            "--timeout",
            "20s",
            "--exec",
            target.to_str().unwrap(),
            "--control",
        ])
        .arg(&control)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let _guard = Process::of_child(&upgrading);
    sockhold.wait_for("upgrade: probing");
    // The probe blocks on the fifo; sockhold answers meanwhile.
    let (code, status, err) = control_client(&["status"], &control);
    assert_eq!(code, 0, "{err}");
    assert!(status.contains("\"generation\":1"), "{status}");
    request_tcp(sockhold.tcp_address(0)).expect("the child serves");
    let (code, _, err) = control_client(&["upgrade"], &control);
    assert_eq!(code, 1);
    assert!(
        err.contains("is being tried; retry once it is done"),
        "{err}"
    );
    std::fs::write(&fifo, "go\n").unwrap();
    sockhold.wait_for("upgraded: pid");
    let output = upgrading.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(
        output.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(
        stdout.trim(),
        format!("upgraded: pid {} runs {}", sockhold.pid, target.display())
    );
}

#[test]
fn a_probe_that_does_not_answer_is_killed_at_its_deadline_and_refused() {
    let dir = TempDir::new();
    let control = dir.join("c.sock");
    // Nobody writes to the fifo: the probe waits until it is killed.
    let fifo = dir.join("never");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
    let sockhold = serving_test_child(&control, &[], &[]);
    let target = slow_to_answer(&dir, &fifo);
    let (code, _, err) = control_client(&["upgrade", "--exec", target.to_str().unwrap()], &control);
    assert_eq!(code, 1);
    assert!(
        err.contains("did not answer the upgrade probe within 5s: is it sockhold?"),
        "{err}"
    );
    // The probe is gone (killed and reaped), nothing else is.
    let children: Vec<_> = std::fs::read_to_string(format!(
        "/proc/{}/task/{}/children",
        sockhold.pid, sockhold.pid
    ))
    .unwrap()
    .split_whitespace()
    .map(str::to_string)
    .collect();
    assert_eq!(children, vec![sockhold.child_pids()[0].to_string()]);
}

#[test]
fn an_exec_path_the_request_line_cannot_carry_is_a_usage_error() {
    use std::os::unix::ffi::OsStrExt;
    let dir = TempDir::new();
    let control = dir.join("c.sock");
    for (path, reason) in [
        (
            &b"/opt/sockhold-\xff"[..],
            "it is not UTF-8, which the control protocol needs",
        ),
        (b"/opt/sockhold ", "it begins or ends with a blank"),
        (b"sockhold", "it is not an absolute path"),
    ] {
        let output = std::process::Command::new(sockhold_bin())
            .arg("upgrade")
            .arg("--exec")
            .arg(std::ffi::OsStr::from_bytes(path))
            .arg("--control")
            .arg(&control)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(64), "{stderr}");
        assert!(stderr.contains(reason), "{stderr}");
        assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
    }
}

/// A target that, in sockhold's place, first kills the pid written in
/// `victim` and waits until it is a zombie (ended, not reaped: its exit
/// falls into the exec), then runs sockhold.
fn killing_during_the_exec(dir: &TempDir, victim: &std::path::Path) -> std::path::PathBuf {
    let path = dir.join("sockhold-killing");
    write_executable(
        &path,
        &format!(
            "#!/usr/bin/python3\n\
             import os, signal, sys, time\n\
             sockhold = {:?}\n\
             if 'SOCKHOLD_UPGRADE_STATE' in os.environ:\n\
             \x20   pid = int(open({:?}).read())\n\
             \x20   os.kill(pid, signal.SIGKILL)\n\
             \x20   deadline = time.monotonic() + 10\n\
             \x20   while open(f'/proc/{{pid}}/stat').read().rsplit(') ', 1)[1][0] != 'Z':\n\
             \x20       if time.monotonic() > deadline:\n\
             \x20           sys.exit('pid %d is not a zombie' % pid)\n\
             \x20       time.sleep(0.005)\n\
             os.execv(sockhold, [sockhold] + sys.argv[1:])\n",
            sockhold_bin(),
            victim.display().to_string()
        ),
    );
    path
}

#[test]
fn a_child_that_ends_during_the_exec_is_reaped_and_counted_by_the_new_binary() {
    let dir = TempDir::new();
    let control = dir.join("c.sock");
    let sockhold = serving_test_child(&control, &["--workers", "2"], &[]);
    let children = sockhold.child_pids();
    let victim = dir.join("victim");
    std::fs::write(&victim, children[1].to_string()).unwrap();
    let target = killing_during_the_exec(&dir, &victim);
    let (code, out, err) =
        control_client(&["upgrade", "--exec", target.to_str().unwrap()], &control);
    assert_eq!(code, 0, "{out} {err}");
    // Reaped after the exec: its status is the one it died with, its slot
    // is restarted, and the restart is counted.
    let upgraded = sockhold.wait_for("upgraded: pid");
    assert!(
        upgraded.contains(&format!("(pids {} {})", children[0], children[1])),
        "{upgraded}"
    );
    sockhold.wait_for("generation 1 worker 1 exited on its own with signal SIGKILL; restarting it");
    sockhold.wait_for("generation 1 worker 1 ready");
    assert_eq!(parent_of(children[0]), Some(sockhold.pid));
    let (code, status, err) = control_client(&["status"], &control);
    assert_eq!(code, 0, "{err}");
    assert!(status.contains("\"restarts\":1"), "{status}");
    let workers = worker_states(&status);
    assert_eq!(workers, ["ready", "ready"], "{status}");
}
