//! The children sockhold starts, as handles: pid, pidfd and start time.
//! Every signal to a child goes through its handle, and a handle is gone
//! the moment its process is reaped, so a pid that may have been reused is
//! never signalled (DESIGN.md §3).
//!
//! - `Children` is the driver's table of live handles, keyed by pid. The
//!   reap loop (`reap`) removes a child's handle in the same step that
//!   collects its status: after that, the engines' signals for that pid find
//!   nothing and are dropped (logged at debug level).
//! - A handle signals with `pidfd_send_signal(2)`, which names the process
//!   itself rather than a number. Without pidfds (Linux < 5.3) it falls back
//!   to `kill(2)`, still safe because an unreaped child's pid cannot be
//!   reused and the handle exists only while the child is unreaped.
//! - Orphans reparented to sockhold (subreaper, PID 1) have no handle: they
//!   are reaped here and reported, never signalled by pid while running
//!   except by `leftovers.rs`, which signals only unreaped children.
//! - Stopping is one mechanism for every kind of child: the stop signal,
//!   then SIGCONT so that a stopped (SIGSTOPped, `T`) process can act on it,
//!   as systemd and s6 do; SIGKILL comes from the engine at its deadline.

#![allow(unsafe_code)]

use crate::signals;
use nix::errno::Errno;
use nix::libc;
use nix::sys::signal::Signal;
use nix::sys::wait::{WaitPidFlag, WaitStatus};
use nix::unistd::Pid;
use std::collections::HashMap;
use std::fmt;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::time::Instant;

/// How a child ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChildStatus {
    Exited(i32),
    Signaled(Signal),
}

impl ChildStatus {
    /// The shell convention: the code itself, or 128+N for signal N.
    pub fn exit_code(self) -> i32 {
        match self {
            ChildStatus::Exited(code) => code,
            ChildStatus::Signaled(signal) => crate::error::exit::SIGNAL_BASE + signal as i32,
        }
    }

    pub fn success(self) -> bool {
        self == ChildStatus::Exited(0)
    }
}

impl fmt::Display for ChildStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ChildStatus::Exited(code) => write!(f, "status {code}"),
            ChildStatus::Signaled(signal) => write!(f, "signal {}", signals::name(*signal)),
        }
    }
}

/// One child sockhold started and has not reaped yet.
#[derive(Debug)]
pub struct ChildHandle {
    pid: Pid,
    /// None where the kernel has no pidfds.
    pidfd: Option<OwnedFd>,
    started_at: Instant,
    /// `--signal-group`: the child leads a process group of its own, and
    /// signals go to the whole group.
    group: bool,
}

impl ChildHandle {
    /// Takes charge of a child that was just started. `pidfd` must refer to
    /// `pid` (from `CLONE_PIDFD`); without one, it is opened here, which is
    /// just as exact as long as nothing reaps between the spawn and this call
    /// (only the driver reaps, and it is not running).
    pub fn new(pid: Pid, pidfd: Option<OwnedFd>, group: bool) -> ChildHandle {
        let pidfd = pidfd.or_else(|| pidfd_open(pid).ok());
        ChildHandle {
            pid,
            pidfd,
            started_at: Instant::now(),
            group,
        }
    }

    /// A child the sockhold this one replaced started (`upgrade/`).
    pub fn adopted(
        pid: Pid,
        pidfd: Option<OwnedFd>,
        group: bool,
        started_at: Instant,
    ) -> ChildHandle {
        ChildHandle {
            pid,
            pidfd,
            started_at,
            group,
        }
    }

    pub fn pid(&self) -> Pid {
        self.pid
    }

    /// Its pidfd, if any, and whether it leads a process group: what an
    /// upgrade carries.
    pub fn carried(&self) -> (Option<RawFd>, bool) {
        (self.pidfd.as_ref().map(AsRawFd::as_raw_fd), self.group)
    }

    pub fn started_at(&self) -> Instant {
        self.started_at
    }

    /// Sends `signal` to the child, or with `--signal-group` to its process
    /// group (and to the child itself as well if it has left that group).
    pub fn signal(&self, signal: Signal) {
        let mut result = Ok(());
        let mut reached_child = false;
        if self.group {
            // The group keeps the child's pid as its id while the child is
            // unreaped (the kernel does not reuse a pid in use as a pgid).
            result = nix::sys::signal::killpg(self.pid, signal);
            reached_child = nix::unistd::getpgid(Some(self.pid)) == Ok(self.pid);
        }
        if !reached_child {
            result = self.signal_process(signal);
        }
        if let Err(errno) = result {
            // ESRCH: it exited already; its exit is on its way.
            log::debug!(
                "cannot send {} to pid {}: {errno}",
                signals::name(signal),
                self.pid
            );
        }
    }

    /// The one way a child is asked to stop: the stop signal, then SIGCONT
    /// so that a stopped process wakes up to act on it (a stopped process
    /// keeps the signal pending otherwise, until SIGKILL). See systemd's
    /// `SendSIGHUP`/kill logic and s6-supervise, which do the same.
    pub fn stop(&self, stop_signal: Signal) {
        self.signal(stop_signal);
        if !matches!(stop_signal, Signal::SIGKILL | Signal::SIGCONT) {
            self.signal(Signal::SIGCONT);
        }
    }

    fn signal_process(&self, signal: Signal) -> Result<(), Errno> {
        match &self.pidfd {
            Some(pidfd) => pidfd_send_signal(pidfd, signal),
            None => nix::sys::signal::kill(self.pid, signal),
        }
    }
}

/// Asks an unreaped process that is not a handle (a leftover found in
/// /proc as sockhold's child) to stop, the same way as `ChildHandle::stop`.
pub fn stop_unreaped(pid: Pid, stop_signal: Signal) {
    let _ = nix::sys::signal::kill(pid, stop_signal);
    if !matches!(stop_signal, Signal::SIGKILL | Signal::SIGCONT) {
        let _ = nix::sys::signal::kill(pid, Signal::SIGCONT);
    }
}

/// The live handles, by pid. Owned by the driver; the engines refer to
/// their children by pid and signal them through this table.
#[derive(Debug, Default)]
pub struct Children {
    handles: HashMap<Pid, ChildHandle>,
}

impl Children {
    pub fn iter(&self) -> impl Iterator<Item = &ChildHandle> {
        self.handles.values()
    }

    pub fn insert(&mut self, handle: ChildHandle) {
        self.handles.insert(handle.pid(), handle);
    }

    /// Sends `signal` to a live child; a child already reaped (or never
    /// ours) is not signalled.
    pub fn signal(&self, pid: Pid, signal: Signal) {
        match self.handles.get(&pid) {
            Some(handle) => handle.signal(signal),
            None => log::debug!(
                "not sending {} to pid {pid}: already reaped",
                signals::name(signal)
            ),
        }
    }

    /// `ChildHandle::stop` for a live child.
    pub fn stop(&self, pid: Pid, stop_signal: Signal) {
        match self.handles.get(&pid) {
            Some(handle) => handle.stop(stop_signal),
            None => log::debug!(
                "not stopping pid {pid} with {}: already reaped",
                signals::name(stop_signal)
            ),
        }
    }

    /// One SIGCHLD can stand for many exits: reaps until nothing is left
    /// and returns every exit, in the order reaped. Each of our children
    /// loses its handle here, before anyone can act on the exit.
    pub fn reap(&mut self) -> Vec<Reaped> {
        let mut reaped = Vec::new();
        loop {
            let (pid, status) = match nix::sys::wait::waitpid(None, Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::Exited(pid, code)) => (pid, ChildStatus::Exited(code)),
                Ok(WaitStatus::Signaled(pid, signal, _)) => (pid, ChildStatus::Signaled(signal)),
                Ok(WaitStatus::StillAlive) | Err(Errno::ECHILD) => break,
                Ok(_) | Err(Errno::EINTR) => continue,
                Err(errno) => {
                    log::warn!("waitpid failed: {errno}");
                    break;
                }
            };
            let handle = self.handles.remove(&pid);
            if let Some(handle) = &handle {
                log::trace!(
                    "pid {pid} ended with {status} after {}",
                    crate::config::format_duration(handle.started_at().elapsed())
                );
            }
            reaped.push(Reaped {
                pid,
                status,
                ours: handle.is_some(),
            });
        }
        reaped
    }
}

/// One reaped process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reaped {
    pub pid: Pid,
    pub status: ChildStatus,
    /// Whether it was one of the children sockhold started (not an orphan).
    pub ours: bool,
}

/// pidfd_open(2).
fn pidfd_open(pid: Pid) -> Result<OwnedFd, Errno> {
    // SAFETY: pidfd_open takes a pid and flags and returns a new fd or -1;
    // it touches no memory of ours.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid.as_raw(), 0) };
    if fd < 0 {
        return Err(Errno::last());
    }
    // SAFETY: the kernel just returned this fd (born O_CLOEXEC, see
    // pidfd_open(2)); nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// A copy, in sockhold, of process `pid`'s `fd` (pidfd_getfd(2), Linux
/// 5.6), born O_CLOEXEC. It needs the same ptrace access as reading the
/// process's /proc/P/syscall. The file stays open while the copy lives:
/// callers drop it at once.
pub fn copy_fd_of(pid: Pid, fd: RawFd) -> Result<OwnedFd, Errno> {
    let pidfd = pidfd_open(pid)?;
    // SAFETY: pidfd_getfd takes a pidfd, an fd number in that process and
    // flags 0, and returns a new fd or -1; it touches no memory of ours.
    let copy = unsafe { libc::syscall(libc::SYS_pidfd_getfd, pidfd.as_raw_fd(), fd, 0) };
    if copy < 0 {
        return Err(Errno::last());
    }
    // SAFETY: the kernel just returned this fd (always O_CLOEXEC, see
    // pidfd_getfd(2)); nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(copy as i32) })
}

/// pidfd_send_signal(2) with no siginfo (as kill(2) would send it).
fn pidfd_send_signal(pidfd: &OwnedFd, signal: Signal) -> Result<(), Errno> {
    // SAFETY: a valid pidfd, a signal number, a null siginfo (allowed:
    // the kernel fills it as kill(2) would) and flags 0.
    let result = unsafe {
        libc::syscall(
            libc::SYS_pidfd_send_signal,
            pidfd.as_raw_fd(),
            signal as libc::c_int,
            std::ptr::null::<libc::siginfo_t>(),
            0,
        )
    };
    if result < 0 {
        Err(Errno::last())
    } else {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    #[test]
    fn statuses_follow_the_shell_convention() {
        assert_eq!(ChildStatus::Exited(3).exit_code(), 3);
        assert_eq!(ChildStatus::Signaled(Signal::SIGKILL).exit_code(), 137);
        assert!(ChildStatus::Exited(0).success());
        assert_eq!(
            ChildStatus::Signaled(Signal::SIGTERM).to_string(),
            "signal SIGTERM"
        );
    }

    #[test]
    fn a_reaped_child_is_not_signalled_through_its_handle() {
        use std::os::unix::process::ExitStatusExt;
        // A child of this test process: the handle signals it while it
        // lives; once it is reaped, the pidfd refuses (ESRCH) even if the
        // pid were reused.
        let mut child = Command::new("sleep").arg("100").spawn().unwrap();
        let pid = Pid::from_raw(child.id() as i32);
        let handle = ChildHandle::new(pid, None, false);
        handle.stop(Signal::SIGKILL);
        let status = child.wait().unwrap();
        assert_eq!(status.signal(), Some(Signal::SIGKILL as i32));
        match &handle.pidfd {
            Some(pidfd) => assert_eq!(pidfd_send_signal(pidfd, Signal::SIGTERM), Err(Errno::ESRCH)),
            None => eprintln!("this kernel has no pidfds: the kill(2) fallback was used"),
        }
    }
}
