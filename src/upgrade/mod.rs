//! `upgrade`: sockhold executes a new binary in its own place. Same pid,
//! so the children stay its children (the child-subreaper bit and the
//! pending signals survive execve(2)); nothing is closed and nothing is
//! bound again. The old process writes its state (`state.rs`) into a
//! sealed memfd, clears CLOEXEC on exactly the fds the state names, blocks
//! every signal (the mask survives execve, so a TERM during the exec waits
//! for the new handlers instead of killing sockhold by its default
//! action), and executes the target with the same argv. The new process
//! takes the state at the top of `main` (`Incoming`), or, if it cannot,
//! executes the old binary again from `SOCKHOLD_UPGRADE_FALLBACK` with the
//! reason in `SOCKHOLD_UPGRADE_FAILED`.
//!
//! Before any of that, the target is probed (`probe.rs`, driven by the
//! event loop): run with `SOCKHOLD_UPGRADE_PROBE=1`, a sockhold answers
//! with the state versions it reads and exits, so that a binary that is
//! not sockhold (or exits at once) is refused while the old one still
//! runs.

#![allow(unsafe_code)]

pub mod maintenance;
pub mod probe;
pub mod state;

use crate::fd_store;
use crate::generations::supervisor::{GenerationId, Supervisor};
use crate::readiness::NotifySocket;
use nix::fcntl::{FcntlArg, FdFlag, OFlag, SealFlag, fcntl};
use nix::sys::memfd::{MFdFlags, memfd_create};
use nix::sys::signal::{SigSet, SigmaskHow, sigprocmask};
use nix::sys::stat::Mode;
use state::{Clock, State};
use std::ffi::{CString, OsString};
use std::io::{Read, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

pub const PROBE_VAR: &str = "SOCKHOLD_UPGRADE_PROBE";
pub const STATE_VAR: &str = "SOCKHOLD_UPGRADE_STATE";
pub const FALLBACK_VAR: &str = "SOCKHOLD_UPGRADE_FALLBACK";
pub const FAILED_VAR: &str = "SOCKHOLD_UPGRADE_FAILED";
/// What a sockhold answers the probe with, before the versions it reads.
const PROBE_ANSWER: &str = "sockhold upgrade-state";

/// What the engine carries (`Engine::carry`).
pub struct Carried {
    pub supervisor: state::Supervisor,
    pub notify: Vec<CarriedNotify>,
    pub stored: Vec<(RawFd, bool, String)>,
    pub nonblocking: Option<Vec<bool>>,
    pub maintenance: Option<crate::generations::maintenance::Carried<RawFd>>,
    /// `--intercept-bind`: the interceptor, its listeners by fd number.
    pub intercept: Option<state::Intercept>,
    /// `--accept`: the per-connection engine's bookkeeping, as written.
    pub per_connection: Option<state::PerConnection>,
}

pub struct CarriedNotify {
    pub generation: GenerationId,
    pub fd: RawFd,
    pub owner: u32,
    pub address: String,
    pub directory: Option<PathBuf>,
}

/// What the engine takes over (`Engine::restore`).
pub struct Restored {
    pub supervisor: Supervisor,
    pub notify: Vec<(GenerationId, NotifySocket)>,
    pub stored: Vec<(OwnedFd, bool, String)>,
    pub nonblocking: Option<Vec<bool>>,
    pub maintenance: Option<crate::generations::maintenance::Carried<OwnedFd>>,
    /// `--intercept-bind`: the interceptor, and its listeners in the
    /// order of `listeners` (owned now; their numbers are the old ones).
    pub intercept: Option<(state::Intercept, Vec<OwnedFd>)>,
    pub per_connection: Option<state::PerConnection>,
}

/// At the very top of `main`: a probe (`SOCKHOLD_UPGRADE_PROBE=1`) is
/// answered with the versions this binary reads; true: exit 0 now.
pub fn answer_probe() -> bool {
    if std::env::var_os(PROBE_VAR).is_none_or(|value| value != "1") {
        return false;
    }
    println!(
        "{PROBE_ANSWER} {}",
        state::versions(state::READS).replace(',', "")
    );
    true
}

/// One reading of both clocks (see `state::Clock`).
pub fn clock() -> Clock {
    let now = Instant::now();
    let monotonic = nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC)
        .map(|t| t.tv_sec() as u64 * 1_000_000_000 + t.tv_nsec() as u64)
        .unwrap_or(0);
    Clock {
        instant: now,
        monotonic_ns: monotonic,
    }
}

fn io_reason(error: &std::io::Error) -> String {
    match error.raw_os_error() {
        Some(errno) => crate::error::errno_text(nix::errno::Errno::from_raw(errno)),
        None => error.to_string(),
    }
}

fn set_cloexec(fd: RawFd, on: bool) -> Result<(), nix::errno::Errno> {
    // SAFETY: only fds this process holds open are named (the state's,
    // the memfd and the fallback); the borrow ends with this call.
    let fd = unsafe { BorrowedFd::borrow_raw(fd) };
    let flags = if on {
        FdFlag::FD_CLOEXEC
    } else {
        FdFlag::empty()
    };
    fcntl(fd, FcntlArg::F_SETFD(flags)).map(|_| ())
}

/// Writes `text` into a sealed memfd (no write, grow, shrink or further
/// seal), so the new binary reads exactly what was written.
fn sealed_memfd(text: &str) -> Result<OwnedFd, String> {
    let name = c"sockhold-upgrade-state";
    let fd = memfd_create(name, MFdFlags::MFD_CLOEXEC | MFdFlags::MFD_ALLOW_SEALING)
        .map_err(|e| format!("cannot create the state memfd: {e}"))?;
    let mut file = std::fs::File::from(fd);
    file.write_all(text.as_bytes())
        .map_err(|e| format!("cannot write the state: {e}"))?;
    let seals = SealFlag::F_SEAL_WRITE
        | SealFlag::F_SEAL_GROW
        | SealFlag::F_SEAL_SHRINK
        | SealFlag::F_SEAL_SEAL;
    fcntl(&file, FcntlArg::F_ADD_SEALS(seals))
        .map_err(|e| format!("cannot seal the state: {e}"))?;
    Ok(OwnedFd::from(file))
}

fn c_string(bytes: &[u8]) -> Result<CString, String> {
    CString::new(bytes).map_err(|_| "an argument or variable contains a NUL byte".to_string())
}

/// The environment for the next binary: this one's, without any upgrade
/// variables, plus `extra`.
fn environment(extra: &[(&str, String)]) -> Result<Vec<CString>, String> {
    let mut env = Vec::new();
    for (key, value) in std::env::vars_os() {
        if [STATE_VAR, FALLBACK_VAR, FAILED_VAR]
            .iter()
            .any(|v| key == *v)
        {
            continue;
        }
        let mut pair = key.into_vec();
        pair.push(b'=');
        pair.extend(value.into_vec());
        env.push(c_string(&pair)?);
    }
    for (key, value) in extra {
        env.push(c_string(format!("{key}={value}").as_bytes())?);
    }
    Ok(env)
}

/// The argv of this process.
pub fn own_arguments() -> Vec<Vec<u8>> {
    std::env::args_os().map(OsString::into_vec).collect()
}

/// `arguments` as execve(2) takes them; this process's own when the state
/// has none (a version 1 state).
fn arguments(arguments: &[Vec<u8>]) -> Result<Vec<CString>, String> {
    if arguments.is_empty() {
        return arguments_of(&own_arguments());
    }
    arguments_of(arguments)
}

fn arguments_of(arguments: &[Vec<u8>]) -> Result<Vec<CString>, String> {
    arguments.iter().map(|arg| c_string(arg)).collect()
}

/// Executes `target` with `state`; returns only if that failed, with the
/// reason, everything restored (CLOEXEC, the signal mask).
pub fn exec(target: &Path, state: &State) -> String {
    let text = state::write(state);
    let memfd = match sealed_memfd(&text) {
        Ok(fd) => fd,
        Err(reason) => return reason,
    };
    // The running binary, for the new one to go back to (by fd: a package
    // upgrade may have replaced the file at the path already).
    let fallback = match nix::fcntl::open(
        "/proc/self/exe",
        OFlag::O_RDONLY | OFlag::O_CLOEXEC,
        Mode::empty(),
    ) {
        Ok(fd) => fd,
        Err(errno) => return format!("cannot open the running binary: {errno}"),
    };
    let mut fds = state.fds();
    fds.push(memfd.as_raw_fd());
    fds.push(fallback.as_raw_fd());
    let prepared = arguments(&state.arguments).and_then(|argv| {
        let env = environment(&[
            (STATE_VAR, memfd.as_raw_fd().to_string()),
            (FALLBACK_VAR, fallback.as_raw_fd().to_string()),
        ])?;
        Ok((argv, env, c_string(target.as_os_str().as_bytes())?))
    });
    let (argv, env, path) = match prepared {
        Ok(prepared) => prepared,
        Err(reason) => return reason,
    };
    log::info!(
        "upgrade: executing {} (state: {} bytes, {} fds)",
        target.display(),
        text.len(),
        fds.len()
    );
    let reason = exec_with(&fds, || nix::unistd::execve(&path, &argv, &env));
    format!("cannot execute {}: {reason}", target.display())
}

/// Clears CLOEXEC on `fds`, blocks every signal and runs `exec`; if it
/// returns (failed), restores both and says why.
fn exec_with(
    fds: &[RawFd],
    exec: impl FnOnce() -> nix::Result<std::convert::Infallible>,
) -> String {
    let mut old_mask = SigSet::empty();
    if let Err(errno) = sigprocmask(
        SigmaskHow::SIG_BLOCK,
        Some(&SigSet::all()),
        Some(&mut old_mask),
    ) {
        return format!("cannot block signals: {errno}");
    }
    let mut cleared = Vec::new();
    let mut reason = None;
    for &fd in fds {
        match set_cloexec(fd, false) {
            Ok(()) => cleared.push(fd),
            Err(errno) => {
                reason = Some(format!("cannot keep fd {fd} open across execve: {errno}"));
                break;
            }
        }
    }
    let reason = match reason {
        Some(reason) => reason,
        None => match exec() {
            Err(errno) => crate::error::errno_text(errno),
        },
    };
    for fd in cleared {
        let _ = set_cloexec(fd, true);
    }
    let _ = sigprocmask(SigmaskHow::SIG_SETMASK, Some(&old_mask), None);
    reason
}

/// The state an upgrade handed this process, taken at start-up.
pub struct Incoming {
    pub state: State,
    /// The reason the new binary gave up and executed this one again.
    pub failed: Option<String>,
    memfd: OwnedFd,
    fallback: OwnedFd,
}

fn fd_from_var(name: &str) -> Result<OwnedFd, String> {
    let value = std::env::var(name).map_err(|_| format!("{name} is not set"))?;
    let number: RawFd = value
        .parse()
        .map_err(|_| format!("{name}='{value}' is not an fd number"))?;
    if number < 3 || fcntl_getfd(number).is_err() {
        return Err(format!("{name}={number}: no such open fd"));
    }
    // SAFETY: the fd is open (checked above) and was left open across
    // execve by the old sockhold for exactly this purpose; nothing else in
    // this process knows of it yet.
    Ok(unsafe { OwnedFd::from_raw_fd(number) })
}

fn fcntl_getfd(fd: RawFd) -> nix::Result<i32> {
    // SAFETY: F_GETFD only asks about the number; an fd that is not open
    // gives EBADF, nothing is touched.
    let borrowed = unsafe { BorrowedFd::borrow_raw(fd) };
    fcntl(borrowed, FcntlArg::F_GETFD)
}

impl Incoming {
    /// At the top of `main`: the state, if this process is an upgrade.
    /// The variables are removed from the environment so that no child
    /// sees them. An error is fatal: without the state the fds cannot be
    /// known.
    pub fn take() -> Option<Result<Incoming, String>> {
        std::env::var_os(STATE_VAR)?;
        let result = (|| {
            let memfd = fd_from_var(STATE_VAR)?;
            let fallback = fd_from_var(FALLBACK_VAR)?;
            let failed = std::env::var(FAILED_VAR).ok();
            for name in [STATE_VAR, FALLBACK_VAR, FAILED_VAR] {
                // SAFETY: called at the top of main, before sockhold
                // starts any thread: nothing reads the environment
                // concurrently.
                unsafe { std::env::remove_var(name) };
            }
            let mut text = String::new();
            let mut file = std::fs::File::from(
                memfd
                    .try_clone()
                    .map_err(|e| format!("cannot read the state: {e}"))?,
            );
            nix::unistd::lseek(&file, 0, nix::unistd::Whence::SeekSet)
                .map_err(|e| format!("cannot read the state: {e}"))?;
            file.read_to_string(&mut text)
                .map_err(|e| format!("cannot read the state: {e}"))?;
            let _ = set_cloexec(memfd.as_raw_fd(), true);
            let _ = set_cloexec(fallback.as_raw_fd(), true);
            let state = state::read(&text).map_err(|e| format!("cannot read the state: {e}"))?;
            Ok(Incoming {
                state,
                failed,
                memfd,
                fallback,
            })
        })();
        Some(result)
    }

    /// Checks that every fd is what the state says, before anything owns
    /// one; and makes them CLOEXEC again, so no child gets them.
    pub fn check(&self) -> Result<(), String> {
        use nix::sys::socket::{getsockopt, sockopt};
        let state = &self.state;
        let socket = |fd: RawFd, what: &str| -> Result<(), String> {
            fcntl_getfd(fd).map_err(|_| format!("{what} (fd {fd}) is not open"))?;
            // SAFETY: open (checked above); borrowed for this call only.
            let borrowed = unsafe { BorrowedFd::borrow_raw(fd) };
            getsockopt(&borrowed, sockopt::SockType)
                .map(|_| ())
                .map_err(|_| format!("{what} (fd {fd}) is not a socket"))
        };
        for held in &state.sockets {
            socket(held.fd, "a held socket")?;
        }
        if let Some((fd, _, _)) = state.control {
            socket(fd, "the control socket")?;
        }
        if let Some(fd) = state.client {
            socket(fd, "the upgrade client's connection")?;
        }
        for notify in &state.notify {
            socket(notify.fd, "a notify socket")?;
        }
        if let Some(fd) = state.pid_file {
            fcntl_getfd(fd).map_err(|_| format!("the pid file (fd {fd}) is not open"))?;
        }
        for child in &state.children {
            if let Some(fd) = child.pidfd {
                fcntl_getfd(fd)
                    .map_err(|_| format!("the pidfd of pid {} (fd {fd}) is not open", child.pid))?;
            }
        }
        for stored in &state.stored {
            fcntl_getfd(stored.fd)
                .map_err(|_| format!("a stored fd (fd {}) is not open", stored.fd))?;
        }
        if let Some(answering) = &state.maintenance {
            maintenance::check(answering)?;
            for connection in &answering.connections {
                socket(connection.fd, "a maintenance connection")?;
            }
        }
        for listener in state.intercept.iter().flat_map(|i| &i.listeners) {
            check_seccomp_listener(listener)?;
        }
        // A process the supervisor waits for must be one whose exit this
        // binary will reap.
        for pid in state.supervisor.pids() {
            if !state.children.iter().any(|c| c.pid == pid) {
                return Err(format!(
                    "pid {pid} of the supervisor is not a carried child"
                ));
            }
        }
        for waiter in &state.waiters {
            socket(waiter.fd, "a waiting control client's connection")?;
        }
        for fd in state.fds() {
            let _ = set_cloexec(fd, true);
        }
        Ok(())
    }

    /// The binary this process runs now: the target of an upgrade, or the
    /// old one after a fallback.
    pub fn binary(&self) -> PathBuf {
        let bytes = if self.failed.is_some() {
            &self.state.exe
        } else {
            &self.state.target
        };
        PathBuf::from(OsString::from_vec(bytes.clone()))
    }

    /// This binary cannot take the state: executes the old one again
    /// (from its fd) with the same state and the reason. Returns only if
    /// that is impossible, with why.
    pub fn fall_back(self, reason: &str) -> String {
        if let Some(first) = &self.failed {
            return format!("{reason} (and the upgrade had already failed: {first})");
        }
        log::error!("upgrade failed: {reason}; going back to the old binary");
        let mut fds = self.state.fds();
        fds.push(self.memfd.as_raw_fd());
        fds.push(self.fallback.as_raw_fd());
        let prepared = arguments(&self.state.arguments).and_then(|argv| {
            let env = environment(&[
                (STATE_VAR, self.memfd.as_raw_fd().to_string()),
                (FALLBACK_VAR, self.fallback.as_raw_fd().to_string()),
                (FAILED_VAR, reason.replace('\n', " ")),
            ])?;
            Ok((argv, env))
        });
        let (argv, env) = match prepared {
            Ok(prepared) => prepared,
            Err(why) => return format!("{reason} (and cannot go back: {why})"),
        };
        let why = exec_with(&fds, || {
            nix::unistd::fexecve(self.fallback.as_fd(), &argv, &env)
        });
        format!("{reason} (and cannot go back to the old binary: {why})")
    }

    /// The fds an engine takes over.
    pub fn take_engine_state(&self, supervisor: Supervisor) -> Restored {
        let own = |fd: RawFd| {
            // SAFETY: checked open by `check`, named once in the state,
            // and taken over here exactly once.
            unsafe { OwnedFd::from_raw_fd(fd) }
        };
        let notify = self
            .state
            .notify
            .iter()
            .map(|n| {
                let socket = NotifySocket::adopt(
                    own(n.fd),
                    String::from_utf8_lossy(&n.address).into_owned(),
                    n.directory
                        .as_ref()
                        .map(|d| PathBuf::from(OsString::from_vec(d.clone()))),
                    nix::unistd::Uid::from_raw(n.owner),
                );
                (n.generation, socket)
            })
            .collect();
        let stored = self
            .state
            .stored
            .iter()
            .map(|s| {
                let name = String::from_utf8_lossy(&s.name).into_owned();
                let name = if fd_store::name_problem(&name).is_some() {
                    fd_store::DEFAULT_NAME.to_string()
                } else {
                    name
                };
                (own(s.fd), s.polled, name)
            })
            .collect();
        let maintenance = self
            .state
            .maintenance
            .as_ref()
            .map(|m| maintenance::from_state(m, clock(), own));
        let intercept = self.state.intercept.as_ref().map(|intercept| {
            let listeners = intercept.listeners.iter().map(|l| own(l.fd)).collect();
            (intercept.clone(), listeners)
        });
        Restored {
            supervisor,
            notify,
            stored,
            nonblocking: self.state.nonblocking.clone(),
            maintenance,
            intercept,
            per_connection: self.state.per_connection.clone(),
        }
    }

    /// Takes over the fd `number` that `check` found open.
    pub fn own(&self, number: RawFd) -> OwnedFd {
        // SAFETY: checked open by `check`, named once in the state, and
        // taken over exactly once by the caller.
        unsafe { OwnedFd::from_raw_fd(number) }
    }
}

/// A child's seccomp listener must be one: open, and the anonymous inode
/// the kernel names `seccomp notify` (an fd that is something else would
/// be read with SECCOMP_IOCTL_NOTIF_RECV).
fn check_seccomp_listener(listener: &state::InterceptListener) -> Result<(), String> {
    let fd = listener.fd;
    let what = format!(
        "generation {}'s seccomp listener (fd {fd})",
        listener.generation
    );
    fcntl_getfd(fd).map_err(|_| format!("{what} is not open"))?;
    match std::fs::read_link(format!("/proc/self/fd/{fd}")) {
        Ok(link) if link.as_os_str() == "anon_inode:seccomp notify" => Ok(()),
        Ok(link) => Err(format!(
            "{what} is not a seccomp listener but {}",
            link.display()
        )),
        // No /proc (a bare container): open is all that can be checked.
        Err(_) if !Path::new("/proc/self/fd").exists() => Ok(()),
        Err(error) => Err(format!("{what} cannot be looked at: {}", io_reason(&error))),
    }
}

/// Answers the client that asked for the upgrade on its inherited
/// connection, blocking (one short line), then closes it.
pub fn answer(connection: OwnedFd, line: &str) {
    let mut stream = std::os::unix::net::UnixStream::from(connection);
    let _ = stream.set_nonblocking(false);
    let _ = stream.set_write_timeout(Some(Duration::from_secs(1)));
    let _ = stream.write_all(&crate::control::reply_line(line));
}

#[cfg(test)]
mod intercept_tests {
    use super::*;

    fn listener(fd: RawFd) -> state::InterceptListener {
        state::InterceptListener {
            key: 1 << 29,
            generation: 4,
            fd,
        }
    }

    #[test]
    fn an_fd_that_is_not_a_seccomp_listener_is_refused_with_what_it_is() {
        let (read, _write) = nix::unistd::pipe2(OFlag::O_CLOEXEC).unwrap();
        let fd = read.as_raw_fd();
        let refused = check_seccomp_listener(&listener(fd)).unwrap_err();
        assert!(
            refused.starts_with(&format!(
                "generation 4's seccomp listener (fd {fd}) is not a seccomp listener but pipe:["
            )),
            "{refused}"
        );
        // A number no fd has (other tests open and close fds meanwhile).
        let none = 999_999;
        assert_eq!(
            check_seccomp_listener(&listener(none)),
            Err(format!(
                "generation 4's seccomp listener (fd {none}) is not open"
            ))
        );
    }
}
