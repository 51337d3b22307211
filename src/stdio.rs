//! The standard fds sockhold was started with. If fd 0, 1 or 2 is closed,
//! the first socket sockhold opens would land there and reach every child
//! as its stdin, stdout or stderr; the gaps are filled with /dev/null
//! before anything else is opened.

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
