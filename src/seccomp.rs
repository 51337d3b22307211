//! seccomp user notification for `--intercept-bind` (seccomp(2),
//! seccomp_unotify(2)): the filter program that `spawn.rs` installs in the
//! child before exec, and sockhold's side of the listener fd it gets back:
//! receiving a notification, reading the caller's memory, answering it
//! (let the call run, or a result of our own), and installing one of
//! sockhold's fds in the caller's fd table (`SECCOMP_IOCTL_NOTIF_ADDFD`).
//!
//! Invariants:
//! - The filter program is plain data, built before the fork (nothing is
//!   allocated between clone and exec).
//! - It sends only `bind`, `listen` and (with Unix paths held) `unlink`
//!   and `unlinkat` to sockhold, and only for the architecture sockhold
//!   was built for: a call from a foreign ABI (i386 on x86_64, x32) is
//!   allowed as it is. Everything else is allowed untouched.
//! - A notification answered late is harmless (the caller waits in the
//!   kernel); one never answered hangs a thread of the child. Every
//!   notification received is answered, and a call that sockhold does not
//!   understand runs for real (`SECCOMP_USER_NOTIF_FLAG_CONTINUE`).
//! - Memory read from the caller is checked against the notification id
//!   (`SECCOMP_IOCTL_NOTIF_ID_VALID`) before sockhold acts on it, so that
//!   a pid reused in the meantime is never read as the caller.
//!
//! No crate beyond libc and nix: the constants and structs are libc's, the
//! few it lacks (AUDIT_ARCH_*, the BPF opcodes' combinations) are here.

#![allow(unsafe_code)]

use nix::errno::Errno;
use nix::libc;
use nix::unistd::Pid;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, RawFd};

/// linux/audit.h: EM_X86_64 | __AUDIT_ARCH_64BIT | __AUDIT_ARCH_LE.
#[cfg(target_arch = "x86_64")]
const AUDIT_ARCH_NATIVE: u32 = 0xc000_003e;
/// linux/audit.h: EM_AARCH64 | __AUDIT_ARCH_64BIT | __AUDIT_ARCH_LE.
#[cfg(target_arch = "aarch64")]
const AUDIT_ARCH_NATIVE: u32 = 0xc000_00b7;

/// Whether this build can install the filter at all (the architectures
/// whose audit value is known here).
pub const SUPPORTED: bool = cfg!(any(target_arch = "x86_64", target_arch = "aarch64"));

/// offsetof(struct seccomp_data, nr) and (.., arch).
const DATA_NR: u32 = 0;
const DATA_ARCH: u32 = 4;

/// The system calls a child's bind interception needs to see.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trapped {
    Bind,
    Listen,
    /// unlink(path): x86_64 has it; aarch64 only has unlinkat.
    Unlink,
    Unlinkat,
}

impl Trapped {
    /// The call a notification's syscall number stands for.
    pub fn of(nr: i32) -> Option<Trapped> {
        let nr = libc::c_long::from(nr);
        match nr {
            libc::SYS_bind => Some(Trapped::Bind),
            libc::SYS_listen => Some(Trapped::Listen),
            libc::SYS_unlinkat => Some(Trapped::Unlinkat),
            #[cfg(target_arch = "x86_64")]
            libc::SYS_unlink => Some(Trapped::Unlink),
            _ => None,
        }
    }
}

/// The classic BPF program of the filter (seccomp(2) SECCOMP_SET_MODE_FILTER).
#[derive(Clone)]
pub struct FilterProgram {
    instructions: Vec<libc::sock_filter>,
}

impl std::fmt::Debug for FilterProgram {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "FilterProgram({} instructions)", self.instructions.len())
    }
}

fn statement(code: u32, k: u32) -> libc::sock_filter {
    libc::sock_filter {
        code: code as u16,
        jt: 0,
        jf: 0,
        k,
    }
}

fn jump_if_equal(k: u32, jt: u8, jf: u8) -> libc::sock_filter {
    libc::sock_filter {
        code: (libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K) as u16,
        jt,
        jf,
        k,
    }
}

impl FilterProgram {
    /// `unix_paths`: also trap unlink/unlinkat (a held socket file must
    /// survive a server that removes its path before binding).
    ///
    /// ```text
    /// 0      ld  [arch]
    /// 1      jeq NATIVE, 0, allow     a foreign ABI: allowed as it is
    /// 2      ld  [nr]
    /// 3..    jeq NR_i, notify, 0      one per trapped call
    /// allow  ret ALLOW
    /// notify ret USER_NOTIF
    /// ```
    pub fn new(unix_paths: bool) -> FilterProgram {
        let mut calls: Vec<u32> = vec![libc::SYS_bind as u32, libc::SYS_listen as u32];
        if unix_paths {
            #[cfg(target_arch = "x86_64")]
            calls.push(libc::SYS_unlink as u32);
            calls.push(libc::SYS_unlinkat as u32);
        }
        let load = libc::BPF_LD | libc::BPF_W | libc::BPF_ABS;
        let count = calls.len() as u8;
        let mut instructions = vec![
            statement(load, DATA_ARCH),
            // To `allow`: skip the load and the call checks.
            jump_if_equal(native_arch(), 0, count + 1),
            statement(load, DATA_NR),
        ];
        for (index, nr) in calls.iter().enumerate() {
            // To `notify`: past the remaining checks and `allow`.
            let to_notify = count - index as u8;
            instructions.push(jump_if_equal(*nr, to_notify, 0));
        }
        instructions.push(statement(
            libc::BPF_RET | libc::BPF_K,
            libc::SECCOMP_RET_ALLOW,
        ));
        instructions.push(statement(
            libc::BPF_RET | libc::BPF_K,
            libc::SECCOMP_RET_USER_NOTIF,
        ));
        FilterProgram { instructions }
    }

    /// The program as seccomp(2) takes it; valid while `self` is.
    pub fn as_fprog(&self) -> libc::sock_fprog {
        libc::sock_fprog {
            len: self.instructions.len() as libc::c_ushort,
            // The kernel only reads the program.
            filter: self.instructions.as_ptr().cast_mut(),
        }
    }
}

#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
fn native_arch() -> u32 {
    AUDIT_ARCH_NATIVE
}

/// Elsewhere the filter is never installed (`SUPPORTED` is false).
#[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
fn native_arch() -> u32 {
    0
}

/// What a refusal to install the filter (seccomp(2)'s errno) means, as a
/// parenthesised hint for the one error line.
pub fn refusal_hint(errno: Errno) -> &'static str {
    match errno {
        Errno::EINVAL => {
            " (this kernel has no seccomp user notification: --intercept-bind needs Linux 5.9 or later)"
        }
        Errno::EACCES | Errno::EPERM => {
            " (seccomp filters are not permitted here, e.g. by a container's own seccomp policy: allow seccomp(2), or run without --intercept-bind)"
        }
        Errno::EBUSY => {
            " (the process already has a seccomp listener above it: sockhold --intercept-bind under another one, or a container manager that intercepts system calls)"
        }
        Errno::ENOSYS => " (this kernel is built without seccomp filters)",
        _ => "",
    }
}

/// Tries the filter in a throwaway child, at start, so that a refusal
/// (a strict container's EPERM, a listener above sockhold's EBUSY) is one
/// fatal line instead of every generation failing to start. The child
/// does as `spawn.rs` will: the filter, with no_new_privs on EACCES, then
/// `_exit` with the errno (0: installed).
///
/// Must be called while sockhold is single-threaded (before the event
/// loop), as fork(2) is then safe for anything the child does.
pub fn probe(filter: &FilterProgram) -> Result<(), Errno> {
    let fprog = filter.as_fprog();
    // SAFETY: sockhold is single-threaded here (see above), and the child
    // only makes system calls and _exits.
    let forked = unsafe { nix::unistd::fork() }?;
    match forked {
        nix::unistd::ForkResult::Child => {
            let install = || {
                // SAFETY: seccomp(2) reads `fprog`, alive in this frame;
                // it changes this throwaway process only.
                unsafe {
                    libc::syscall(
                        libc::SYS_seccomp,
                        libc::SECCOMP_SET_MODE_FILTER,
                        libc::SECCOMP_FILTER_FLAG_NEW_LISTENER,
                        &fprog as *const libc::sock_fprog,
                    )
                }
            };
            let mut result = install();
            if result < 0 && Errno::last() == Errno::EACCES {
                // SAFETY: prctl(2) PR_SET_NO_NEW_PRIVS, this process only.
                unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) };
                result = install();
            }
            let status = if result < 0 { Errno::last_raw() } else { 0 };
            // SAFETY: _exit(2) ends the throwaway child at once, running
            // nothing of sockhold's.
            unsafe { libc::_exit(status.min(255)) }
        }
        nix::unistd::ForkResult::Parent { child } => loop {
            match nix::sys::wait::waitpid(child, None) {
                Ok(nix::sys::wait::WaitStatus::Exited(_, 0)) => return Ok(()),
                Ok(nix::sys::wait::WaitStatus::Exited(_, code)) => {
                    return Err(Errno::from_raw(code));
                }
                Err(Errno::EINTR) => continue,
                Ok(_) => return Err(Errno::ECHILD),
                Err(errno) => return Err(errno),
            }
        },
    }
}

/// One intercepted call, as the kernel reported it.
#[derive(Debug, Clone, Copy)]
pub struct Notification {
    pub id: u64,
    /// The calling thread (a thread id: not necessarily a process's pid).
    pub thread: Pid,
    pub call: Option<Trapped>,
    pub args: [u64; 6],
}

/// What the listener fd has for sockhold right now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pending {
    /// A notification waits: `receive` will not block.
    Notification,
    /// No process uses the filter any more (every one has exited).
    Hangup,
    Nothing,
}

/// Looks without waiting. SECCOMP_IOCTL_NOTIF_RECV blocks when nothing is
/// pending (the listener has no non-blocking mode), so it is called only
/// after this says a notification waits; a notification withdrawn in
/// between (its caller was killed) makes it fail with ENOENT, not block.
pub fn pending(listener: BorrowedFd<'_>) -> Pending {
    use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
    let mut fds = [PollFd::new(listener, PollFlags::POLLIN)];
    match poll(&mut fds, PollTimeout::ZERO) {
        Ok(1) => {
            let revents = fds[0].revents().unwrap_or(PollFlags::empty());
            if revents.contains(PollFlags::POLLIN) {
                Pending::Notification
            } else if revents.intersects(PollFlags::POLLHUP | PollFlags::POLLERR) {
                Pending::Hangup
            } else {
                Pending::Nothing
            }
        }
        _ => Pending::Nothing,
    }
}

/// SECCOMP_IOCTL_NOTIF_RECV.
pub fn receive(listener: BorrowedFd<'_>) -> Result<Notification, Errno> {
    // SAFETY: all zeroes is a valid seccomp_notif, and the kernel wants
    // it zeroed (seccomp_unotify(2)).
    let mut raw: libc::seccomp_notif = unsafe { std::mem::zeroed() };
    notify_ioctl(listener, libc::SECCOMP_IOCTL_NOTIF_RECV, &mut raw)?;
    Ok(Notification {
        id: raw.id,
        thread: Pid::from_raw(raw.pid as i32),
        call: (raw.data.arch == native_arch())
            .then(|| Trapped::of(raw.data.nr))
            .flatten(),
        args: raw.data.args,
    })
}

/// SECCOMP_IOCTL_NOTIF_ID_VALID: the caller is still waiting in this very
/// call (so its pid and memory were really its own when read).
pub fn still_valid(listener: BorrowedFd<'_>, id: u64) -> bool {
    let mut id = id;
    notify_ioctl(listener, libc::SECCOMP_IOCTL_NOTIF_ID_VALID, &mut id).is_ok()
}

fn send(listener: BorrowedFd<'_>, response: libc::seccomp_notif_resp) -> Result<(), Errno> {
    let mut response = response;
    notify_ioctl(listener, libc::SECCOMP_IOCTL_NOTIF_SEND, &mut response)
}

/// One of the listener's ioctls (seccomp_unotify(2)), whose argument is a
/// pointer to one `T`: each caller passes the type its request reads or
/// writes (`seccomp_notif` for RECV, `u64` for ID_VALID,
/// `seccomp_notif_resp` for SEND, `seccomp_notif_addfd` for ADDFD).
fn notify_ioctl<T>(
    listener: BorrowedFd<'_>,
    request: libc::Ioctl,
    argument: &mut T,
) -> Result<(), Errno> {
    // SAFETY: `argument` is one valid `T`, borrowed exclusively for the
    // call, of the type `request` reads or writes (see above); the kernel
    // touches nothing else of this process.
    let result = unsafe { libc::ioctl(listener.as_raw_fd(), request, argument as *mut T) };
    if result < 0 {
        Err(Errno::last())
    } else {
        Ok(())
    }
}

/// Lets the call run for real, as if there were no filter. Fine for
/// `bind`, `listen` and `unlink`: no pointer the kernel reads again could
/// have been changed to sockhold's harm (seccomp_unotify(2) warns of
/// that TOCTOU; this is a convenience, not a security boundary).
pub fn reply_continue(listener: BorrowedFd<'_>, id: u64) -> Result<(), Errno> {
    send(
        listener,
        libc::seccomp_notif_resp {
            id,
            val: 0,
            error: 0,
            flags: libc::SECCOMP_USER_NOTIF_FLAG_CONTINUE as u32,
        },
    )
}

/// The call returns 0 without running.
pub fn reply_success(listener: BorrowedFd<'_>, id: u64) -> Result<(), Errno> {
    send(
        listener,
        libc::seccomp_notif_resp {
            id,
            val: 0,
            error: 0,
            flags: 0,
        },
    )
}

/// SECCOMP_IOCTL_NOTIF_ADDFD with SECCOMP_ADDFD_FLAG_SETFD (Linux 5.9):
/// a dup of sockhold's `source` becomes the caller's fd `target`,
/// replacing (closing) what was there, as dup2 would, with O_CLOEXEC as
/// `cloexec` says. The call itself is answered separately: not with
/// SECCOMP_ADDFD_FLAG_SEND (5.14), which would make the call return the
/// new fd's number, where bind(2) must return 0.
pub fn install_fd(
    listener: BorrowedFd<'_>,
    id: u64,
    source: BorrowedFd<'_>,
    target: RawFd,
    cloexec: bool,
) -> Result<(), Errno> {
    let mut addfd = libc::seccomp_notif_addfd {
        id,
        flags: libc::SECCOMP_ADDFD_FLAG_SETFD as u32,
        srcfd: source.as_raw_fd() as u32,
        newfd: target as u32,
        newfd_flags: if cloexec { libc::O_CLOEXEC as u32 } else { 0 },
    };
    // `source` is an fd sockhold keeps open: the kernel dups it.
    notify_ioctl(listener, libc::SECCOMP_IOCTL_NOTIF_ADDFD, &mut addfd)
}

/// Reads up to `buffer.len()` bytes at `address` in `thread`'s memory
/// (process_vm_readv(2)); the count read (short at an unmapped page).
pub fn read_memory(thread: Pid, address: u64, buffer: &mut [u8]) -> Result<usize, Errno> {
    use nix::sys::uio::{RemoteIoVec, process_vm_readv};
    let remote = [RemoteIoVec {
        base: address as usize,
        len: buffer.len(),
    }];
    let mut local = [std::io::IoSliceMut::new(buffer)];
    process_vm_readv(thread, &mut local, &remote)
}

/// A NUL-terminated string at `address` in `thread`'s memory, of at most
/// `max` bytes (without the NUL); read a page at a time so that a string
/// that ends just before an unmapped page is still read. None when it is
/// longer or cannot be read.
pub fn read_c_string(thread: Pid, address: u64, max: usize) -> Option<Vec<u8>> {
    const PAGE: u64 = 4096;
    let mut text = Vec::new();
    let mut at = address;
    while text.len() <= max {
        let room = (PAGE - at % PAGE) as usize;
        let mut chunk = vec![0u8; room];
        let read = read_memory(thread, at, &mut chunk).ok()?;
        if read == 0 {
            return None;
        }
        if let Some(end) = chunk[..read].iter().position(|&b| b == 0) {
            text.extend_from_slice(&chunk[..end]);
            return (text.len() <= max).then_some(text);
        }
        text.extend_from_slice(&chunk[..read]);
        at += read as u64;
    }
    None
}

/// The listener fd as the child sent it: checks it is what was expected
/// (a seccomp notification fd) before sockhold watches it.
pub fn is_listener(fd: impl AsFd) -> bool {
    std::fs::read_link(format!("/proc/self/fd/{}", fd.as_fd().as_raw_fd()))
        .is_ok_and(|target| target.as_os_str() == "anon_inode:seccomp notify")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_filter_jumps_land_on_allow_and_notify() {
        for unix_paths in [false, true] {
            let program = FilterProgram::new(unix_paths);
            let code = &program.instructions;
            let last = code.len() - 1;
            let allow = last - 1;
            assert_eq!(code[allow].k, libc::SECCOMP_RET_ALLOW);
            assert_eq!(code[last].k, libc::SECCOMP_RET_USER_NOTIF);
            // The arch check's false branch lands on allow.
            assert_eq!(1 + 1 + code[1].jf as usize, allow);
            for (at, instruction) in code.iter().enumerate().take(allow).skip(3) {
                assert_eq!(at + 1 + instruction.jt as usize, last, "check {at}");
                assert_eq!(instruction.jf, 0);
            }
        }
        assert_eq!(Trapped::of(libc::SYS_bind as i32), Some(Trapped::Bind));
        assert_eq!(Trapped::of(libc::SYS_read as i32), None);
    }
}
