//! Start-up, against what it may find: a live Unix socket that does not
//! accept, an `fd:N` with nothing inherited on it, and an inherited socket
//! at the top of the fd limit.

use crate::harness::*;
use nix::errno::Errno;
use nix::libc;
use nix::sys::socket::{self, AddressFamily, Backlog, SockFlag, SockType, UnixAddr};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::FileTypeExt;

/// The one `sockhold: error:` line of a log.
fn error_line(log: &str) -> &str {
    let errors: Vec<&str> = log
        .lines()
        .filter(|line| line.starts_with("sockhold: error: "))
        .collect();
    assert_eq!(errors.len(), 1, "exactly one error line; log:\n{log}");
    errors[0]
}

/// Lowers sockhold's soft RLIMIT_NOFILE to `limit` from its first
/// instruction on (the hook runs in the forked process, before exec).
fn with_fd_limit(builder: Builder, limit: u64) -> Builder {
    let lower = move || {
        let mut current = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: getrlimit(2) fills in `current`; async-signal-safe.
        if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut current) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
        current.rlim_cur = limit;
        // SAFETY: setrlimit(2) reads `current`; async-signal-safe.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &current) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(())
    };
    // SAFETY: the hook makes only async-signal-safe calls and allocates
    // nothing.
    unsafe { builder.pre_exec(lower) }
}

#[test]
fn a_live_unix_socket_whose_queue_is_full_is_refused_at_once() {
    let dir = TempDir::new();
    let path = dir.join("full.sock");
    let address = UnixAddr::new(&path).unwrap();
    let listener = socket::socket(
        AddressFamily::Unix,
        SockType::Stream,
        SockFlag::SOCK_CLOEXEC,
        None,
    )
    .unwrap();
    socket::bind(listener.as_raw_fd(), &address).unwrap();
    socket::listen(&listener, Backlog::new(0).unwrap()).unwrap();
    // A server that does not accept: its queue fills up, and a blocking
    // connect(2) would wait for room for as long as it does not.
    let mut queued: Vec<OwnedFd> = Vec::new();
    let full = (0..64).any(|_| {
        let client = socket::socket(
            AddressFamily::Unix,
            SockType::Stream,
            SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK,
            None,
        )
        .unwrap();
        match socket::connect(client.as_raw_fd(), &address) {
            Ok(()) => {
                queued.push(client);
                false
            }
            Err(Errno::EAGAIN) => true,
            Err(errno) => panic!("connect: {errno}"),
        }
    });
    assert!(full, "the accept queue never filled");

    let (code, log) = run_to_exit(&["-l", path.to_str().unwrap(), "--", "true"]);
    assert_eq!(code, 71, "{log}");
    assert_eq!(
        error_line(&log),
        format!(
            "sockhold: error: cannot listen on '{}': already in use by another process (stop it, or choose another path)",
            path.display()
        )
    );
    assert!(
        std::fs::symlink_metadata(&path)
            .unwrap()
            .file_type()
            .is_socket(),
        "the live socket's file is left alone"
    );
}

#[test]
fn fd_n_adopts_only_an_fd_that_was_open_when_sockhold_started() {
    // Nothing is inherited on fd 3, so the TCP socket sockhold binds first
    // lands there; `fd:3` must not take it for an inherited one.
    let (code, log) = run_to_exit(&["-l", "127.0.0.1:0", "-l", "fd:3", "--", "true"]);
    assert_eq!(code, 64, "{log}");
    assert_eq!(
        error_line(&log),
        "sockhold: error: cannot adopt 'fd:3': nothing was open on fd 3 when sockhold started (pass a listening stream socket or a bound datagram socket on that fd)"
    );
}

#[test]
fn an_inherited_socket_at_the_top_of_the_fd_limit_reaches_the_child() {
    // The socket is inherited on the highest fd the limit allows: there is
    // no free fd above it, where the old shuffle parked it.
    const HIGH: libc::c_int = 60;
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let address = listener.local_addr().unwrap();
    let raw = listener.as_raw_fd();
    let inherit_high = move || {
        // SAFETY: dup2(2) in the forked process only; async-signal-safe.
        if unsafe { libc::dup2(raw, HIGH) } < 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(())
    };
    // SAFETY: the hook makes only async-signal-safe calls.
    let builder = unsafe { Sockhold::command().pre_exec(inherit_high) };
    let sockhold = with_fd_limit(builder, HIGH as u64 + 1)
        .args(["-l", &format!("fd:{HIGH}"), "--", test_child_bin()])
        .start();
    sockhold.wait_for("generation 1 started");
    let answer = request_tcp(address).unwrap_or_else(|error| {
        panic!(
            "no answer on the inherited socket: {error}; log:\n{}",
            sockhold.log_text()
        )
    });
    assert!(answer.contains("fd=3"), "{answer}");
}
