//! `sockhold upgrade` with `--intercept-bind`: the children's seccomp
//! listeners and what the interceptor knows of each generation are
//! carried, so the new binary answers a child's bind as the old one did:
//! a child that binds again after the upgrade, and the child a reload
//! starts, get the held socket; no connection is refused meanwhile.

use crate::harness::*;
use nix::sys::signal::Signal;
use nix::unistd::Pid;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

/// How many seccomp listeners `pid` holds.
fn seccomp_listeners(pid: i32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .filter_map(|entry| std::fs::read_link(entry.ok()?.path()).ok())
        .filter(|link| link.as_os_str() == "anon_inode:seccomp notify")
        .count()
}

/// binds_itself.py on sockhold's TCP port (learnt from --compat-env
/// server-starter), binding again on SIGUSR1.
fn start(control: &Path) -> Sockhold {
    start_with(control, &[])
}

fn start_with(control: &Path, options: &[&str]) -> Sockhold {
    let script =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/support/servers/binds_itself.py");
    Sockhold::command()
        .args(options)
        .args(["-l", "127.0.0.1:0", "--control"])
        .arg(control)
        .args([
            "--intercept-bind",
            "--compat-env",
            "server-starter",
            "--ready-timeout",
            "30s",
            "--",
            "sh",
            "-c",
        ])
        .arg(format!(
            "p=${{SERVER_STARTER_PORT%%=*}}; exec python3 {} --port \"${{p##*:}}\" --rebind-on-usr1",
            script.display()
        ))
        .start()
}

fn status(control: &Path) -> String {
    let (code, status, err) = control_client(&["status"], control);
    assert_eq!(code, 0, "{err}");
    status
}

fn upgrade(control: &Path, pid: i32) {
    let (code, out, err) = control_client(&["upgrade"], control);
    assert_eq!(code, 0, "{err}");
    assert_eq!(out, format!("upgraded: pid {pid} runs {}", sockhold_bin()));
}

#[test]
fn upgrade_with_intercept_bind_keeps_the_children_and_the_new_binary_answers_their_binds() {
    let dir = TempDir::new();
    let control = dir.join("c.sock");
    let sockhold = start(&control);
    let first_bind = sockhold.wait_for("generation 1: pid ");
    sockhold.wait_for("generation 1 ready");
    let address = sockhold.tcp_address(0);
    let child = sockhold.child_pids()[0];
    assert!(
        first_bind.contains(&format!("pid {child} bind {address} -> held fd 3")),
        "{first_bind}"
    );
    let pid = status_pid(&status(&control));
    assert_eq!(seccomp_listeners(pid), 1);

    let stop = Arc::new(AtomicBool::new(false));
    let client = hammer(Arc::clone(&stop), move || request_tcp(address));
    upgrade(&control, pid);
    sockhold.wait_for("upgraded: pid");
    assert_eq!(parent_of(child), Some(Pid::from_raw(pid)));
    assert_eq!(seccomp_listeners(pid), 1);
    let fds = fd_count(pid);

    // The child binds again: only the new binary can answer (the bind
    // would fail with EADDRINUSE if it ran, and the server would exit).
    let process = Process::child_of(child, Pid::from_raw(pid)).expect("the child");
    process.signal(Signal::SIGUSR1).unwrap();
    process.let_go();
    sockhold.wait_for(&format!("rebound pid={child} "));
    request_tcp(address).unwrap();
    // What status shows was carried, and the new binary added to it.
    let shown = format!(r#"{{"generation":1,"what":"pid {child} bind {address} -> held fd 3"}}"#);
    let after = status(&control);
    assert_eq!(status_pid(&after), pid);
    assert_eq!(after.matches(&shown).count(), 2, "{after}");

    // A second upgrade carries the same; nothing accumulates.
    upgrade(&control, pid);
    assert_eq!(fd_count(pid), fds);
    assert_eq!(seccomp_listeners(pid), 1);

    // A reload: the new generation's bind is intercepted by the new
    // binary and gets the same held socket.
    let (code, _, err) = control_client(&["reload"], &control);
    assert_eq!(code, 0, "{err}");
    let bind = sockhold.wait_for("generation 2: pid ");
    assert!(
        bind.contains(&format!(" bind {address} -> held fd 3")),
        "{bind}"
    );
    sockhold.wait_for("generation 1 exited");
    let pids = stop_hammer(&stop, client);
    let second = *sockhold.child_pids().last().unwrap();
    assert_ne!(second, child);
    assert!(pids.contains(&child.as_raw()), "{pids:?}");
    let answer = request_tcp(address).unwrap();
    assert_eq!(answer_pid(&answer), second.as_raw(), "{answer}");
    assert!(!status(&control).contains(&format!("pid {child} ")));

    let mut sockhold = sockhold;
    sockhold.signal(Signal::SIGTERM);
    assert_eq!(sockhold.wait_exit().code(), Some(0));
}

#[test]
fn a_bind_waiting_while_sockhold_upgrades_is_answered_by_the_new_binary() {
    let dir = TempDir::new();
    let control = dir.join("c.sock");
    let sockhold = start(&control);
    sockhold.wait_for("generation 1 ready");
    let address = sockhold.tcp_address(0);
    let child = sockhold.child_pids()[0];
    let pid = status_pid(&status(&control));
    let bind_nr = if cfg!(target_arch = "aarch64") {
        200
    } else {
        49
    };
    // The target, executed with the state (in sockhold's pid, after the
    // old binary is gone and before the new one runs), has the child bind
    // again and goes on only once that bind waits in its seccomp
    // listener: nobody reads the listener meanwhile, so the notification
    // is still queued when the new binary starts. No fork: nothing here
    // may reap one of sockhold's children.
    let target = dir.join("next-sockhold");
    write_executable(
        &target,
        &format!(
            "#!/usr/bin/python3\n\
             import os, signal, sys, time\n\
             sockhold = {sockhold:?}\n\
             if 'SOCKHOLD_UPGRADE_STATE' in os.environ:\n\
             \x20   os.kill({child}, signal.SIGUSR1)\n\
             \x20   deadline = time.monotonic() + 10\n\
             \x20   while open('/proc/{child}/syscall').read().split()[0] != '{bind_nr}':\n\
             \x20       if time.monotonic() > deadline:\n\
             \x20           sys.exit('the child did not bind')\n\
             \x20       time.sleep(0.01)\n\
             os.execv(sockhold, [sockhold] + sys.argv[1:])\n",
            sockhold = sockhold_bin()
        ),
    );
    let target = target.to_str().unwrap().to_string();

    let stop = Arc::new(AtomicBool::new(false));
    let client = hammer(Arc::clone(&stop), move || request_tcp(address));
    let (code, out, err) = control_client(&["upgrade", "--exec", &target], &control);
    assert_eq!(code, 0, "{err}");
    assert_eq!(out, format!("upgraded: pid {pid} runs {target}"));
    // Answered after the new binary took over (its poll loop runs only
    // after this line). Had the listener been lost, the bind would have
    // failed (ENOSYS) and the server exited.
    sockhold.wait_for("upgraded: pid");
    sockhold.wait_for(&format!("rebound pid={child} "));
    stop_hammer(&stop, client);
    assert_eq!(parent_of(child), Some(Pid::from_raw(pid)));
    let shown = format!(r#"{{"generation":1,"what":"pid {child} bind {address} -> held fd 3"}}"#);
    let after = status(&control);
    assert_eq!(after.matches(&shown).count(), 2, "{after}");
    assert_eq!(answer_pid(&request_tcp(address).unwrap()), child.as_raw());
}

#[test]
fn with_two_workers_both_listeners_are_carried_and_a_reload_after_the_upgrade_is_intercepted() {
    let dir = TempDir::new();
    let control = dir.join("c.sock");
    let sockhold = start_with(&control, &["--workers", "2"]);
    sockhold.wait_for("generation 1 ready");
    let address = sockhold.tcp_address(0);
    let workers = sockhold.child_pids();
    assert_eq!(workers.len(), 2);
    let pid = status_pid(&status(&control));
    assert_eq!(seccomp_listeners(pid), 2);
    let stop = Arc::new(AtomicBool::new(false));
    let client = hammer(Arc::clone(&stop), move || request_tcp(address));
    upgrade(&control, pid);
    assert_eq!(seccomp_listeners(pid), 2);
    // Each worker binds again, each through its own carried listener.
    for &worker in &workers {
        let process = Process::child_of(worker, Pid::from_raw(pid)).expect("a worker");
        process.signal(Signal::SIGUSR1).unwrap();
        process.let_go();
        sockhold.wait_for(&format!("rebound pid={worker} "));
    }
    let (code, _, err) = control_client(&["reload"], &control);
    assert_eq!(code, 0, "{err}");
    sockhold.wait_for("generation 1 worker 1 exited");
    stop_hammer(&stop, client);
    let after = status(&control);
    let ours = |pid: Pid| format!(r#""what":"pid {pid} bind {address} -> held fd 3"}}"#);
    let started: Vec<Pid> = sockhold
        .child_pids()
        .into_iter()
        .filter(|p| !workers.contains(p))
        .collect();
    assert_eq!(started.len(), 2, "{started:?}");
    for worker in started {
        assert!(
            after.contains(&format!(r#"{{"generation":2,{}"#, ours(worker))),
            "{worker}: {after}"
        );
    }
}

#[test]
fn a_new_binary_that_cannot_take_the_interceptor_goes_back_and_the_old_one_answers_binds() {
    let dir = TempDir::new();
    let control = dir.join("c.sock");
    let sockhold = start(&control);
    sockhold.wait_for("generation 1 ready");
    let address = sockhold.tcp_address(0);
    let child = sockhold.child_pids()[0];
    let pid = status_pid(&status(&control));
    let fds = fd_count(pid);
    // A stand-in for a sockhold that reads the arguments differently: run
    // with the state, it leaves --intercept-bind out.
    let next = dir.join("sockhold-next");
    write_executable(
        &next,
        &format!(
            "#!/usr/bin/python3\n\
             import os, sys\n\
             sockhold = {:?}\n\
             args = sys.argv[1:]\n\
             if 'SOCKHOLD_UPGRADE_STATE' in os.environ:\n\
             \x20   args.remove('--intercept-bind')\n\
             os.execv(sockhold, [sockhold] + args)\n",
            sockhold_bin()
        ),
    );
    let stop = Arc::new(AtomicBool::new(false));
    let client = hammer(Arc::clone(&stop), move || request_tcp(address));
    let (code, out, err) = control_client(&["upgrade", "--exec", next.to_str().unwrap()], &control);
    assert_eq!(code, 1, "{out} {err}");
    assert!(
        err.contains("the state carries --intercept-bind's interceptor, the arguments do not have --intercept-bind"),
        "{err}"
    );
    sockhold.wait_for(&format!("pid {pid} runs {} again", sockhold_bin()));
    // The old binary took its listeners back: it answers the child's bind.
    let process = Process::child_of(child, Pid::from_raw(pid)).expect("the child");
    process.signal(Signal::SIGUSR1).unwrap();
    process.let_go();
    sockhold.wait_for(&format!("rebound pid={child} "));
    stop_hammer(&stop, client);
    assert_eq!(seccomp_listeners(pid), 1);
    assert_eq!(fd_count(pid), fds);
    let (code, _, err) = control_client(&["reload"], &control);
    assert_eq!(code, 0, "{err}");
    let bind = sockhold.wait_for("generation 2: pid ");
    assert!(
        bind.contains(&format!(" bind {address} -> held fd 3")),
        "{bind}"
    );
}
