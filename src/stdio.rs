//! The standard fds sockhold was started with, and the terminal they may
//! be. If fd 0, 1 or 2 is closed, the first socket sockhold opens would
//! land there and reach every child as its stdin, stdout or stderr; the
//! gaps are filled with /dev/null before anything else is opened. And a
//! sockhold in the background of a terminal must not be stopped for
//! writing its log there.

#![allow(unsafe_code)]

/// Opens /dev/null on each of fds 0-2 that is closed.
pub fn ensure_standard_fds_open() {
    use nix::fcntl::{FcntlArg, OFlag, fcntl, open};
    use std::os::fd::{BorrowedFd, IntoRawFd};
    for fd in 0..3 {
        // SAFETY: only asks whether the fd is open; nothing is closed or owned.
        let open_already = fcntl(unsafe { BorrowedFd::borrow_raw(fd) }, FcntlArg::F_GETFD).is_ok();
        if !open_already {
            // open(2) returns the lowest free fd, which is this one; it is
            // left open for the rest of sockhold's life (and inherited).
            if let Ok(null) = open("/dev/null", OFlag::O_RDWR, nix::sys::stat::Mode::empty()) {
                let _ = null.into_raw_fd();
            }
        }
    }
}

/// Ignores SIGTTIN and SIGTTOU, as tini does. The kernel sends them to a
/// background process that reads from or (with `stty tostop`) writes to
/// its terminal; by default they stop it, and a stopped sockhold reloads,
/// reaps and stops nothing. Ignored, the write goes through (and a read
/// fails with EIO: sockhold reads no terminal). A handler would not do:
/// the kernel retries the write after it, raising the signal again.
/// Children get the default back (`spawn.rs` resets every disposition).
pub fn ignore_terminal_stops() {
    use nix::sys::signal::{SigHandler, Signal, signal};
    for terminal_stop in [Signal::SIGTTIN, Signal::SIGTTOU] {
        // SAFETY: SIG_IGN installs no handler, so no code of ours runs in
        // signal context; signal(2) fails only for an invalid signal.
        let _ = unsafe { signal(terminal_stop, SigHandler::SigIgn) };
    }
}
