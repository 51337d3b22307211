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
    // Count what arrives over a window: every 10ms at most, that is no
    // more than window/10ms + 1 sent in it, plus what the socket had
    // queued before (the kernel queues at most max_dgram_qlen, 10 here by
    // default, and a little slack for a larger setting). A busy loop sends
    // thousands. A slow reader only ever sees fewer.
    let window = Duration::from_millis(300);
    let mut buffer = [0u8; 4096];
    let mut pings = 0;
    let started = std::time::Instant::now();
    notify
        .set_read_timeout(Some(Duration::from_millis(50)))
        .unwrap();
    while started.elapsed() < window {
        if let Ok(length) = notify.recv(&mut buffer) {
            if &buffer[..length] == b"WATCHDOG=1" {
                pings += 1;
            }
        }
    }
    let most = (window.as_millis() / 10) as usize + 1 + 20;
    assert!(pings >= 1, "no ping within {window:?}");
    assert!(
        pings <= most,
        "{pings} pings within {window:?}: a busy loop"
    );
}

// ---------------------------------------------------------------------
// Bad input and messages.

/// sockhold with a control socket at `dir/ctl`, once `ready_line` is logged.
fn with_control(dir: &TempDir, args: &[&str], ready_line: &str) -> Sockhold {
    let sockhold = Sockhold::command()
        .args(["-l", "127.0.0.1:0", "--control"])
        .arg(dir.join("ctl"))
        .args(args)
        .start();
    sockhold.wait_for(ready_line);
    sockhold
}

#[test]
fn reload_with_nothing_to_reload_is_ok_in_lazy_and_accept_mode_alike() {
    let dir = TempDir::new();
    let ctl = dir.join("ctl");
    let ctl = ctl.to_str().unwrap();
    let lazy = with_control(
        &dir,
        &["--lazy", "--", test_child_bin()],
        "waiting for a connection to start generation 1 (--lazy)",
    );
    let (code, stdout, stderr) = run(&["reload", "--control", ctl, "--timeout", "10s"]);
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(
        stdout,
        "nothing to reload: no child is running (--lazy); the next connection starts the command afresh"
    );
    drop(lazy);
    let dir = TempDir::new();
    let ctl = dir.join("ctl");
    let ctl = ctl.to_str().unwrap();
    let _accept = with_control(&dir, &["--accept", "--", "cat"], "accepting connections");
    let (code, stdout, stderr) = run(&["reload", "--control", ctl, "--timeout", "10s"]);
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(
        stdout,
        "nothing to reload in --accept mode: every connection runs the command afresh"
    );
}

#[test]
fn reload_while_a_lazy_child_backs_off_is_answered() {
    let dir = TempDir::new();
    let ctl = dir.join("ctl");
    let ctl = ctl.to_str().unwrap();
    // Every start fails: sockhold backs off before it watches again.
    let sockhold = with_control(
        &dir,
        &[
            "--lazy",
            "--restart-max-delay",
            "1h",
            "--",
            test_child_bin(),
            "--exit-at-start",
            "1",
        ],
        "waiting for a connection to start generation 1 (--lazy)",
    );
    let address = sockhold.tcp_address(0);
    let _waiting = std::net::TcpStream::connect(address).unwrap();
    // Each start fails and the connection stays queued: the backoff
    // doubles (100ms, 200ms, ...); by the fifth it is 1.6s, time enough
    // for the reload to come in the middle of it.
    sockhold.wait_for("generation 5 ended with status 1; waiting for a connection again in");
    let (code, stdout, stderr) = run(&["reload", "--control", ctl, "--timeout", "10s"]);
    assert_eq!(code, 0, "{stderr}\n{}", sockhold.log_text());
    assert!(stdout.starts_with("nothing to reload: "), "{stdout}");
}

#[test]
fn typo_hints_stay_on_the_one_line() {
    let (code, _, stderr) = run(&["--rady", "1s", "--", "true"]);
    assert_eq!(code, 64);
    assert_eq!(
        stderr,
        "sockhold: error: unexpected argument '--rady' found (did you mean '--ready'? see sockhold --help)"
    );
    let (code, _, stderr) = run(&["--restart", "nevr", "--", "true"]);
    assert_eq!(code, 64);
    assert_eq!(
        stderr,
        "sockhold: error: invalid value 'nevr' for '--restart <POLICY>' [possible values: on-failure, always, never] (did you mean 'never'? see sockhold --help)"
    );
    let (code, _, stderr) = run(&["reload", "--contrl", "x"]);
    assert_eq!(code, 64);
    assert_eq!(
        stderr,
        "sockhold: error: unexpected argument '--contrl' found (did you mean '--control'? see sockhold --help)"
    );
    // A negative number is a bad value, not an unknown option (whose tip,
    // "use -- -1", would make it the command).
    let (code, _, stderr) = run(&["--stop-timeout", "-1", "--", "true"]);
    assert_eq!(code, 64);
    assert_eq!(
        stderr,
        "sockhold: error: invalid value '-1' for '--stop-timeout <DURATION>': a duration cannot be negative (see sockhold --help)"
    );
}

#[test]
fn a_stop_through_the_control_socket_is_logged_as_such() {
    for mode in [
        vec![
            "--ready",
            "notify",
            "--",
            test_child_bin(),
            "--ready-after",
            "0",
        ],
        vec!["--accept", "--", "cat"],
    ] {
        let dir = TempDir::new();
        let ctl = dir.join("ctl");
        let ready = if mode[0] == "--accept" {
            "accepting connections"
        } else {
            "generation 1 ready"
        };
        let mut sockhold = with_control(&dir, &mode, ready);
        let (code, _, stderr) = run(&["stop", "--control", ctl.to_str().unwrap()]);
        assert_eq!(code, 0, "{stderr}");
        let log = sockhold.exits_with(0);
        assert!(
            log.contains("stop requested on the control socket: stopping"),
            "{log}"
        );
        assert!(!log.contains("SIGTERM received"), "{log}");
    }
}

#[test]
fn a_failed_reload_is_reported_as_failed_not_refused() {
    let dir = TempDir::new();
    let flag = dir.join("fail");
    let script = format!(
        "if [ -e '{}' ]; then exit 3; fi; exec '{}' --ready-after 0",
        flag.display(),
        test_child_bin()
    );
    let _sockhold = with_control(
        &dir,
        &["--ready", "notify", "--", "sh", "-c", &script],
        "generation 1 ready",
    );
    std::fs::write(&flag, "").unwrap();
    let ctl = dir.join("ctl");
    let ctl = ctl.to_str().unwrap();
    let (code, _, stderr) = run(&["reload", "--control", ctl]);
    assert_eq!(code, 1, "{stderr}");
    assert_eq!(
        stderr,
        format!(
            "sockhold: error: reload failed at '{ctl}': generation 2 exited with status 3 before ready (see sockhold's log)"
        )
    );
}

#[test]
fn ready_timeout_zero_is_refused_for_what_it_is() {
    let (code, _, stderr) = run(&["--ready-timeout", "0", "-l", "127.0.0.1:0", "--", "true"]);
    assert_eq!(code, 64);
    assert_eq!(
        stderr,
        "sockhold: error: cannot use --ready-timeout '0ms': no generation could ever be ready in time (give it a positive duration, e.g. 60s, the default)"
    );
}

#[test]
fn the_same_address_given_twice_is_a_usage_error_not_another_process() {
    for (args, message) in [
        (
            ["-l", "127.0.0.1:9", "-l", "127.0.0.1:9"],
            "cannot listen on '127.0.0.1:9': given twice (give each address once)",
        ),
        (
            ["-l", "web=./a.sock", "-l", "api=./a.sock"],
            "cannot listen on 'api=./a.sock': the same address as 'web=./a.sock' (give each address once)",
        ),
        (
            ["-l", "9", "-l", "127.0.0.1:9"],
            "cannot listen on '127.0.0.1:9': it overlaps '9', which takes port 9 on every address (give each address once)",
        ),
    ] {
        let mut all = args.to_vec();
        all.extend(["--", "true"]);
        let (code, _, stderr) = run(&all);
        assert_eq!(code, 64, "{stderr}");
        assert_eq!(stderr, format!("sockhold: error: {message}"));
    }
    // Port 0 twice is two sockets on two ports.
    let mut sockhold = Sockhold::command()
        .args(["-l", "127.0.0.1:0", "-l", "127.0.0.1:0", "--", "true"])
        .start();
    sockhold.exits_with(0);
    assert_ne!(sockhold.tcp_address(0), sockhold.tcp_address(1));
}

#[test]
fn a_socket_name_with_a_colon_is_told_so() {
    let (code, _, stderr) = run(&["-l", "web:1=127.0.0.1:8080", "--", "true"]);
    assert_eq!(code, 64);
    assert_eq!(
        stderr,
        "sockhold: error: invalid value 'web:1=127.0.0.1:8080' for '--listen <ADDR>': socket name contains ':' (a name is 1 to 255 printable ASCII characters without ':' or spaces) (see sockhold --help)"
    );
}

#[test]
fn pid_file_and_control_paths_that_cannot_work_say_the_fix_and_exit_64() {
    let dir = TempDir::new();
    let here = dir.path().to_str().unwrap();
    let (code, _, stderr) = run(&["-l", "127.0.0.1:0", "--pid-file", here, "--", "true"]);
    assert_eq!(code, 64, "{stderr}");
    assert_eq!(
        stderr,
        format!(
            "sockhold: error: cannot use --pid-file '{here}': it is a directory (name a file in it, e.g. {here}/sockhold.pid)"
        )
    );
    let (code, _, stderr) = run(&["-l", "127.0.0.1:0", "--control", here, "--", "true"]);
    assert_eq!(code, 64, "{stderr}");
    assert_eq!(
        stderr,
        format!(
            "sockhold: error: cannot use --control '{here}': it is a directory (name a socket file in it, e.g. {here}/sockhold.ctl)"
        )
    );
    let long = format!("{here}/{}", "c".repeat(120));
    let expected = format!(
        "sockhold: error: invalid value '{long}' for '--control <PATH>': Unix socket path is {} bytes, the limit is 107 (use a shorter path) (see sockhold --help)",
        long.len()
    );
    let (code, _, stderr) = run(&["-l", "127.0.0.1:0", "--control", &long, "--", "true"]);
    assert_eq!((code, stderr.as_str()), (64, expected.as_str()));
    let (code, _, stderr) = run(&["status", "--control", &long]);
    assert_eq!((code, stderr.as_str()), (64, expected.as_str()));
}

#[test]
fn a_generation_that_dies_of_sigpipe_is_told_its_output_was_closed() {
    // sockhold's stdout, and so the child's, is a pipe nobody reads.
    let (read_end, write_end) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).unwrap();
    drop(read_end);
    let write_fd = std::os::fd::AsRawFd::as_raw_fd(&write_end);
    let hook = move || {
        // SAFETY: dup2(2) on two fd numbers touches no memory.
        if unsafe { libc::dup2(write_fd, 1) } < 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(())
    };
    // SAFETY: the hook only calls dup2(2), which is async-signal-safe; the
    // fd stays open in the parent until after the spawn.
    let builder = unsafe { Sockhold::command().pre_exec(hook) };
    let mut sockhold = builder
        .args(["-l", "127.0.0.1:0", "--restart", "never", "--"])
        .args(["sh", "-c", "echo hello"])
        .start();
    drop(write_end);
    let log = sockhold.exits_with(128 + 13);
    assert!(
        log.contains("generation 1 exited with signal SIGPIPE before ready (its stdout or stderr was closed?)"),
        "{log}"
    );
}
