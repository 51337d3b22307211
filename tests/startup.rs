//! Start-up, against what it may find: an inherited socket at the top of
//! the fd limit.

use crate::harness::*;
use nix::libc;
use std::os::fd::AsRawFd;

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
