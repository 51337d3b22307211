//! Faults and bad input from the hardening review (issue 9): each test
//! states what sockhold promises when things go wrong, and each failed
//! before its fix.

use crate::harness::*;
use nix::libc;
use nix::sys::signal::Signal;
use nix::unistd::Pid;
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::process::{Command, Output, Stdio};
use std::sync::mpsc;
use std::time::Duration;

/// Runs `command` to its end and returns its output; kills it (through
/// its pidfd) and panics if it takes longer than `within`.
fn output_within(mut command: Command, within: Duration) -> Output {
    let mut child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start the command");
    let process = Process::of_child(&child);
    let mut stdout = child.stdout.take().unwrap();
    let mut stderr = child.stderr.take().unwrap();
    let (done_tx, done) = mpsc::channel();
    std::thread::spawn(move || {
        let mut out = Vec::new();
        let mut err = Vec::new();
        let _ = stdout.read_to_end(&mut out);
        let _ = stderr.read_to_end(&mut err);
        let _ = done_tx.send((out, err));
    });
    let Ok((stdout, stderr)) = done.recv_timeout(within) else {
        let _ = process.signal(Signal::SIGKILL);
        let _ = child.wait();
        panic!("{command:?} did not finish within {within:?}");
    };
    let status = child.wait().expect("wait for the command");
    Output {
        status,
        stdout,
        stderr,
    }
}

/// `sockhold ARGS...` (the client, or a sockhold that must fail at once),
/// run to its end: exit code, stdout, stderr.
fn run(args: &[&str]) -> (i32, String, String) {
    let mut command = Command::new(sockhold_bin());
    command.args(args);
    let output = output_within(command, WAIT);
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).trim().to_string(),
        String::from_utf8_lossy(&output.stderr).trim().to_string(),
    )
}

/// The fd number that `pid` gets after `n` more fds are opened (fds take
/// the lowest free number).
fn fd_after_opening(pid: Pid, n: usize) -> i32 {
    let open: std::collections::BTreeSet<i32> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .expect("read /proc/PID/fd")
        .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse().ok())
        .collect();
    (0..).filter(|fd| !open.contains(fd)).nth(n).unwrap()
}

/// Lowers the soft limit of open files of the running process `pid`
/// (held by the test, so not reused).
fn limit_open_files(pid: Pid, soft: u64) {
    let mut old = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: prlimit(2) with a null new limit only reads the current one
    // into `old`, a valid rlimit we own.
    let got = unsafe {
        libc::prlimit(
            pid.as_raw(),
            libc::RLIMIT_NOFILE,
            std::ptr::null(),
            &mut old,
        )
    };
    assert_eq!(got, 0, "prlimit: {}", std::io::Error::last_os_error());
    let new = libc::rlimit {
        rlim_cur: soft as libc::rlim_t,
        rlim_max: old.rlim_max,
    };
    // SAFETY: prlimit(2) reads `new`, a valid rlimit we own; the old
    // limit is not asked for.
    let set = unsafe {
        libc::prlimit(
            pid.as_raw(),
            libc::RLIMIT_NOFILE,
            &new,
            std::ptr::null_mut(),
        )
    };
    assert_eq!(set, 0, "prlimit: {}", std::io::Error::last_os_error());
}

/// Whether this run may create PID namespaces (says why not).
fn can_unshare() -> bool {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("skipped: creating a PID namespace needs root");
        return false;
    }
    true
}

// ---------------------------------------------------------------------
// 12. Leftovers are reaped, not only signalled, before sockhold exits.

#[test]
fn pid1_reaps_every_leftover_before_it_exits() {
    if !can_unshare() {
        return;
    }
    // Each `(sleep 1000 &)` leaves an orphan with PID 1 (sockhold) as its
    // parent; the child then exits, and with --restart never sockhold
    // stops the leftovers and exits. A leftover that is signalled but not
    // reaped stays a zombie until the namespace is torn down, and sockhold
    // never logs its end.
    let mut sockhold = Sockhold::launched_by(&[
        "unshare",
        "--pid",
        "--fork",
        "--mount-proc",
        "--kill-child",
        "--",
    ])
    .args([
        "-v",
        "--restart",
        "never",
        "--",
        "sh",
        "-c",
        "for i in 1 2 3 4 5; do (sleep 1000 &); done; exit 0",
    ])
    .start();
    let log = sockhold.exits_with(0);
    let stopping = log
        .lines()
        .find_map(|line| {
            line.split("stopping what the child left behind: SIGTERM to pids ")
                .nth(1)
        })
        .unwrap_or_else(|| panic!("no leftovers stopped; log:\n{log}"));
    let pids: Vec<&str> = stopping.split_whitespace().collect();
    assert_eq!(pids.len(), 5, "{log}");
    for pid in pids {
        assert!(
            log.contains(&format!("left-behind pid {pid} ended with signal SIGTERM")),
            "leftover {pid} was not reaped; log:\n{log}"
        );
    }
}

// ---------------------------------------------------------------------
// 11. The control socket after EMFILE, and the client's timeout.

#[test]
fn control_socket_serves_its_queue_again_after_running_out_of_fds() {
    let dir = TempDir::new();
    let control = dir.join("ctl");
    let sockhold = Sockhold::command()
        .args(["-v", "-l", "127.0.0.1:0", "--ready", "notify", "--control"])
        .arg(&control)
        .args(["--", test_child_bin(), "--ready-after", "0"])
        .start();
    sockhold.wait_for("generation 1 ready");
    // Two fds to spare: the third connection cannot be accepted.
    limit_open_files(sockhold.pid, fd_after_opening(sockhold.pid, 2) as u64);
    let mut idle = Vec::new();
    let stuck = loop {
        assert!(
            idle.len() < 40,
            "sockhold never ran out of fds; log:\n{}",
            sockhold.log_text()
        );
        let stream = UnixStream::connect(&control).expect("connect to the control socket");
        let line = sockhold.wait_for("control socket: ");
        if line.contains("cannot accept") {
            break stream;
        }
        idle.push(stream);
    };
    // Fds are free again once the idle connections are closed: the one
    // left in the queue is accepted and answered without any new event.
    drop(idle);
    let mut stuck = stuck;
    stuck.write_all(b"status\n").unwrap();
    stuck.set_read_timeout(Some(WAIT)).unwrap();
    let mut reply = String::new();
    let read = stuck.read_to_string(&mut reply);
    assert!(
        read.is_ok() && reply.starts_with("{\"pid\":"),
        "no status reply ({read:?}, {reply:?}); log:\n{}",
        sockhold.log_text()
    );
}

#[test]
fn client_gives_up_after_its_timeout_when_nobody_answers() {
    let dir = TempDir::new();
    let path = dir.join("ctl");
    // A socket that takes connections into its queue and never answers.
    let _silent = std::os::unix::net::UnixListener::bind(&path).unwrap();
    let path = path.to_str().unwrap();
    for request in ["status", "reload", "stop"] {
        let (code, stdout, stderr) = run(&[request, "--control", path, "--timeout", "300ms"]);
        assert_eq!(code, 75, "{request}: {stderr}");
        assert_eq!(stdout, "");
        assert!(
            stderr.starts_with(&format!(
                "sockhold: error: no answer from sockhold at '{path}' within 300ms: "
            )) && stderr.ends_with("(see sockhold's log, or raise --timeout)"),
            "{request}: {stderr}"
        );
    }
}

#[test]
fn client_gives_up_after_its_timeout_when_the_queue_is_full() {
    use nix::sys::socket::{
        AddressFamily, Backlog, SockFlag, SockType, UnixAddr, bind, connect, listen, socket,
    };
    use std::os::fd::AsRawFd;
    let dir = TempDir::new();
    let path = dir.join("ctl");
    let address = UnixAddr::new(&path).unwrap();
    let listener = socket(
        AddressFamily::Unix,
        SockType::Stream,
        SockFlag::SOCK_CLOEXEC,
        None,
    )
    .unwrap();
    bind(listener.as_raw_fd(), &address).unwrap();
    // A backlog of 0 queues one connection; the next connect(2) waits.
    listen(&listener, Backlog::new(0).unwrap()).unwrap();
    let filler = socket(
        AddressFamily::Unix,
        SockType::Stream,
        SockFlag::SOCK_CLOEXEC,
        None,
    )
    .unwrap();
    connect(filler.as_raw_fd(), &address).unwrap();
    let path = path.to_str().unwrap();
    let (code, _, stderr) = run(&["status", "--control", path, "--timeout", "300ms"]);
    assert_eq!(code, 75, "{stderr}");
    assert_eq!(
        stderr,
        format!(
            "sockhold: error: no answer from sockhold at '{path}' within 300ms: its control socket's queue is full (see sockhold's log, or raise --timeout)"
        )
    );
}

// ---------------------------------------------------------------------
// 13. Smaller ones: absurd values from the environment.

#[test]
fn an_absurd_listen_fds_count_is_refused_not_allocated() {
    let mut sockhold = Sockhold::launched_by(&[
        "sh",
        "-c",
        "LISTEN_PID=$$ LISTEN_FDS=4294967296 exec \"$0\" \"$@\"",
    ])
    .args(["--", "true"])
    .start();
    let log = sockhold.exits_with(64);
    assert!(
        log.contains(
            "sockhold: error: cannot adopt sockets from 'LISTEN_FDS=4294967296': more than 4096 sockets"
        ),
        "{log}"
    );
}

#[test]
fn a_tiny_watchdog_usec_is_pinged_at_most_every_10ms_not_in_a_busy_loop() {
    let dir = TempDir::new();
    let notify = std::os::unix::net::UnixDatagram::bind(dir.join("notify")).unwrap();
    notify.set_read_timeout(Some(WAIT)).unwrap();
    let sockhold = Sockhold::command()
        .env("NOTIFY_SOCKET", dir.join("notify"))
        .env("WATCHDOG_USEC", "1")
        .args(["-l", "127.0.0.1:0", "--", test_child_bin()])
        .start();
    sockhold.wait_for(
        "watchdog: WATCHDOG_USEC=1 asks for a ping every 0us; pinging every 10ms instead",
    );
    let mut buffer = [0u8; 4096];
    let mut pings = Vec::new();
    while pings.len() < 6 {
        let length = notify.recv(&mut buffer).expect("a notify message");
        if &buffer[..length] == b"WATCHDOG=1" {
            pings.push(std::time::Instant::now());
        }
    }
    // A lower bound only: a slow machine pings later, never sooner.
    let spread = pings[5] - pings[0];
    assert!(
        spread >= Duration::from_millis(40),
        "6 pings within {spread:?}: a busy loop"
    );
}
