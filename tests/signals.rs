//! Signals sent to sockhold: none that can be caught ends it by its default
//! action (so none orphans a child that keeps the port), those it does not
//! act on itself reach the child, a signal mask inherited from whoever
//! started it does not deafen it, and `--parent-death-signal` takes the
//! children along when sockhold is SIGKILLed.

use crate::harness::*;
use nix::errno::Errno;
use nix::libc;
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::signal::{SigSet, SigmaskHow, Signal};
use nix::unistd::Pid;
use std::io::{BufRead, BufReader};
use std::net::TcpStream;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// A process held by a pidfd opened here, for what the harness's handles
/// do not offer: signals by number (real-time ones) and waiting for the
/// exit of a process that is not our child. SIGKILLed when dropped.
struct Held {
    pid: Pid,
    pidfd: OwnedFd,
    kill_on_drop: bool,
}

impl Held {
    /// `pid`, if `belongs(pid)` holds before and after its pidfd is opened
    /// (so that the pidfd names that process, not one that got its pid
    /// after it was reaped).
    fn open(pid: Pid, belongs: impl Fn(Pid) -> bool) -> Option<Held> {
        if !belongs(pid) {
            return None;
        }
        // SAFETY: pidfd_open(2) takes a pid and no flags; it touches no
        // memory of ours.
        let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid.as_raw(), 0 as libc::c_uint) };
        if fd < 0 {
            return None;
        }
        // SAFETY: the fd pidfd_open just returned, owned by nothing else.
        let pidfd = unsafe { OwnedFd::from_raw_fd(fd as RawFd) };
        belongs(pid).then_some(Held {
            pid,
            pidfd,
            kill_on_drop: true,
        })
    }

    /// Sends signal `number` (any, real-time ones too) through the pidfd.
    fn send(&self, number: libc::c_int) -> Result<(), Errno> {
        // SAFETY: pidfd_send_signal(2) on our pidfd, no siginfo, no flags.
        let result = unsafe {
            libc::syscall(
                libc::SYS_pidfd_send_signal,
                self.pidfd.as_raw_fd(),
                number,
                std::ptr::null::<libc::siginfo_t>(),
                0 as libc::c_uint,
            )
        };
        if result == 0 {
            Ok(())
        } else {
            Err(Errno::last())
        }
    }

    /// Waits until it exits (its pidfd turns readable); false if it is
    /// still running at the deadline.
    fn exits_within(&self, within: Duration) -> bool {
        let deadline = Instant::now() + within;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let timeout = PollTimeout::try_from(left.as_millis()).unwrap_or(PollTimeout::MAX);
            let mut fds = [PollFd::new(self.pidfd.as_fd(), PollFlags::POLLIN)];
            match poll(&mut fds, timeout) {
                Ok(1) => return true,
                Ok(_) if left.is_zero() => return false,
                Ok(_) | Err(Errno::EINTR) => {}
                Err(error) => panic!("poll the pidfd of pid {}: {error}", self.pid),
            }
        }
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        if self.kill_on_drop {
            let _ = self.send(libc::SIGKILL);
        }
    }
}

/// A word no other test's sockhold has on its command line.
fn unique_token(test: &str) -> String {
    static COUNTER: AtomicUsize = AtomicUsize::new(0);
    format!(
        "{test}-{}-{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::SeqCst)
    )
}

fn cmdline_has(pid: Pid, token: &str) -> bool {
    std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|cmdline| {
        cmdline
            .split(|&b| b == 0)
            .any(|arg| arg == token.as_bytes())
    })
}

/// The parent of `pid` (field 4 of /proc/PID/stat).
fn parent_of(pid: Pid) -> Option<Pid> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let (_, rest) = stat.rsplit_once(')')?;
    Some(Pid::from_raw(rest.split_whitespace().nth(1)?.parse().ok()?))
}

/// sockhold held by a pidfd of our own, recognised by a token on its
/// command line (`--tag TOKEN` of its test_child), to send it signals by
/// number. Not killed on drop: `sockhold` stops it.
fn hold_sockhold(sockhold: &Sockhold, token: &str) -> Held {
    let mut held =
        Held::open(sockhold.pid, |pid| cmdline_has(pid, token)).expect("a pidfd for sockhold");
    held.kill_on_drop = false;
    held
}

/// The generation's child, checked to be sockhold's, once it serves
/// (which it does only after installing its signal handlers).
fn serving_child(sockhold: &Sockhold) -> Held {
    let answer = request_tcp(sockhold.tcp_address(0)).unwrap();
    let pid = Pid::from_raw(answer_pid(&answer));
    Held::open(pid, |pid| parent_of(pid) == Some(sockhold.pid)).expect("sockhold's child")
}

#[test]
fn quit_reaches_the_child_and_sockhold_keeps_serving() {
    let mut sockhold = Sockhold::command()
        .args(["-l", "127.0.0.1:0", "--", test_child_bin(), "--log-signals"])
        .start();
    let first = answer_pid(&request_tcp(sockhold.tcp_address(0)).unwrap());
    sockhold.signal(Signal::SIGQUIT);
    sockhold.wait_for("test_child: got SIGQUIT");
    // Still there, and the same child still serves.
    let answer = request_tcp(sockhold.tcp_address(0)).unwrap();
    assert_eq!(answer_pid(&answer), first);
    sockhold.signal(Signal::SIGTERM);
    sockhold.exits_with(0);
}

/// The signals passed on by default besides QUIT, USR1, USR2, WINCH.
const ALSO_FORWARDED: [&str; 9] = [
    "ALRM", "VTALRM", "PROF", "IO", "PWR", "URG", "STKFLT", "ABRT", "CONT",
];

#[test]
fn every_catchable_signal_is_passed_on_or_ignored_never_fatal() {
    let token = unique_token("every-catchable");
    let mut command = Sockhold::command().args([
        "-l",
        "127.0.0.1:0",
        "--",
        test_child_bin(),
        "--log-signals",
        "--tag",
        &token,
    ]);
    for name in ALSO_FORWARDED {
        command = command.args(["--log-signal", name]);
    }
    let mut sockhold = command.start();
    let child = serving_child(&sockhold);
    let by_number = hold_sockhold(&sockhold, &token);
    for name in ALSO_FORWARDED {
        let signal: Signal = format!("SIG{name}").parse().unwrap();
        sockhold.signal(signal);
        sockhold.wait_for(&format!("test_child: got {}", signal.as_str()));
    }
    // Caught and ignored: the kernel sends them for sockhold's own limits.
    for signal in [Signal::SIGXCPU, Signal::SIGXFSZ] {
        sockhold.signal(signal);
        sockhold.wait_for(&format!("ignoring {}", signal.as_str()));
    }
    // Real-time signals: caught and ignored, the first and the last.
    for (number, name) in [
        (libc::SIGRTMIN(), "SIGRTMIN"),
        (libc::SIGRTMIN() + 3, "SIGRTMIN+3"),
        (libc::SIGRTMAX(), "SIGRTMAX"),
    ] {
        by_number.send(number).unwrap();
        sockhold.wait_for(&format!("ignoring {name} (signal {number};"));
    }
    // Ignored without a word: background terminal I/O (see below).
    for signal in [Signal::SIGTTIN, Signal::SIGTTOU, Signal::SIGPIPE] {
        sockhold.signal(signal);
    }
    drop(by_number);
    // Not one of them ended sockhold or its child.
    let answer = request_tcp(sockhold.tcp_address(0)).unwrap();
    assert_eq!(Pid::from_raw(answer_pid(&answer)), child.pid);
    sockhold.signal(Signal::SIGTERM);
    let log = sockhold.exits_with(0);
    assert!(
        log.contains("generation 1 exited with signal SIGTERM"),
        "{log}"
    );
}

#[test]
fn background_terminal_io_signals_do_not_stop_sockhold() {
    // In a process group of its own, as a shell's background job is, so
    // that the kernel acts on TTIN and TTOU (it discards them for an
    // orphaned process group).
    // SAFETY: setpgid(2) is async-signal-safe.
    let command = unsafe {
        Sockhold::command().pre_exec(|| {
            nix::unistd::setpgid(Pid::from_raw(0), Pid::from_raw(0))?;
            Ok(())
        })
    };
    let mut sockhold = command
        .args(["-l", "127.0.0.1:0", "--", test_child_bin()])
        .start();
    sockhold.wait_for("generation 1 started");
    sockhold.signal(Signal::SIGTTIN);
    sockhold.signal(Signal::SIGTTOU);
    // A stopped sockhold would leave this TERM pending until SIGCONT.
    sockhold.signal(Signal::SIGTERM);
    sockhold.exits_with(0);
}

#[test]
fn forward_signals_replaces_the_default_list() {
    let mut sockhold = Sockhold::command()
        .args(["-l", "127.0.0.1:0", "--forward-signals", "USR1"])
        .args(["--", test_child_bin(), "--log-signals"])
        .start();
    request_tcp(sockhold.tcp_address(0)).unwrap();
    sockhold.signal(Signal::SIGQUIT);
    sockhold.wait_for("ignoring SIGQUIT (not in --forward-signals)");
    sockhold.signal(Signal::SIGUSR1);
    sockhold.wait_for("test_child: got SIGUSR1");
    sockhold.signal(Signal::SIGTERM);
    let log = sockhold.exits_with(0);
    assert!(!log.contains("got SIGQUIT"), "{log}");
}

#[test]
fn signals_blocked_by_whoever_started_sockhold_are_unblocked() {
    let mut blocked = SigSet::empty();
    for signal in [Signal::SIGHUP, Signal::SIGTERM, Signal::SIGCHLD] {
        blocked.add(signal);
    }
    // SAFETY: sigprocmask(2) is async-signal-safe.
    let command = unsafe {
        Sockhold::command().pre_exec(move || {
            nix::sys::signal::sigprocmask(SigmaskHow::SIG_BLOCK, Some(&blocked), None)?;
            Ok(())
        })
    };
    let mut sockhold = command
        .args(["-l", "127.0.0.1:0", "--", test_child_bin()])
        .start();
    sockhold.wait_for("generation 1 ready");
    // Reload (HUP), which also needs the old generation's exit (CHLD).
    sockhold.signal(Signal::SIGHUP);
    sockhold.wait_for("generation 2 ready");
    sockhold.wait_for("generation 1 exited");
    // Stop (TERM).
    sockhold.signal(Signal::SIGTERM);
    sockhold.exits_with(0);
}

#[test]
fn the_parent_death_signal_ends_the_child_when_sockhold_is_killed() {
    for (flag, child_dies) in [(Some("--parent-death-signal=TERM"), true), (None, false)] {
        let mut sockhold = Sockhold::command()
            .args(["-l", "127.0.0.1:0"])
            .args(flag)
            .args(["--", test_child_bin()])
            .start();
        let child = serving_child(&sockhold);
        sockhold.signal(Signal::SIGKILL);
        sockhold.wait_exit();
        if child_dies {
            assert!(
                child.exits_within(WAIT),
                "child {} still running {WAIT:?} after sockhold was killed; log:\n{}",
                child.pid,
                sockhold.log_text()
            );
        } else {
            // Without it the child is orphaned and keeps running (until
            // `child` is dropped, which SIGKILLs it).
            assert!(!child.exits_within(Duration::from_millis(200)));
        }
    }
}

#[test]
fn in_accept_mode_forwarded_signals_reach_every_connections_child() {
    // Says "ready" on the connection once QUIT is blocked, then waits for
    // it (sigwait: a QUIT that comes before the wait is not missed, as it
    // would be by a handler and pause()); then says so on stderr
    // (sockhold's, in one write, so that two children's lines do not
    // interleave) and exits.
    let script = "import signal, os\n\
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGQUIT})\n\
        print('ready', flush=True)\n\
        signal.sigwait({signal.SIGQUIT})\n\
        os.write(2, b'connection child got QUIT\\n')\n\
        os._exit(0)\n";
    let mut sockhold = Sockhold::command()
        .args(["--accept", "--inetd", "-l", "127.0.0.1:0"])
        .args(["--", "python3", "-c", script])
        .start();
    sockhold.wait_for("accepting connections");
    let connections: Vec<BufReader<TcpStream>> = (0..2)
        .map(|_| {
            let stream = TcpStream::connect(sockhold.tcp_address(0)).unwrap();
            stream.set_read_timeout(Some(WAIT)).unwrap();
            let mut reader = BufReader::new(stream);
            let mut line = String::new();
            reader.read_line(&mut line).unwrap();
            assert_eq!(line, "ready\n");
            reader
        })
        .collect();
    sockhold.signal(Signal::SIGQUIT);
    sockhold.wait_for("got QUIT");
    sockhold.wait_for("got QUIT");
    drop(connections);
    sockhold.signal(Signal::SIGTERM);
    sockhold.exits_with(0);
}
