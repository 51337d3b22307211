//! Starting one child: the fd layout, environment and signal state it gets,
//! and the exec error that comes back if it cannot run.
//!
//! Invariants (see DESIGN.md §3):
//! - Everything is prepared before the child starts: argv/envp pointer
//!   arrays, the `LISTEN_PID=` slot, the fd moves. Between clone and exec
//!   the child makes only async-signal-safe system calls and allocates
//!   nothing; it shares sockhold's memory until exec (vfork style) and runs
//!   on a stack of its own.
//! - The child gets fds 0-2 (or the connection as 0 and 1), the given fds at
//!   3, 4, ... and no other fd.
//! - Signals are blocked around clone so that no handler of sockhold's runs
//!   in the child; the child resets every disposition to default and
//!   unblocks everything just before exec. With `--parent-death-signal`
//!   it then asks the kernel for that signal when sockhold dies, and
//!   checks that sockhold has not died already.
//!
//! This file is the main home of `unsafe` in sockhold. Each `unsafe`
//! block holds one operation, with the reason that one is sound
//! (`clippy::multiple_unsafe_ops_per_block`).

#![allow(unsafe_code)]

use crate::seccomp::FilterProgram;
use nix::errno::Errno;
use nix::libc::{self, c_char, c_int};
use nix::unistd::{AccessFlags, Pid};
use std::cell::Cell;
use std::convert::Infallible;
use std::ffi::{CString, OsStr, OsString};
use std::marker::PhantomData;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

/// Lowest fd the passed sockets start at (sd_listen_fds(3): SD_LISTEN_FDS_START).
pub const FIRST_PASSED_FD: RawFd = 3;

/// Environment variables addressed to sockhold itself by whoever started
/// it. They must never reach a child: LISTEN_* would name the wrong pid and
/// fds, a child talking to systemd's NOTIFY_SOCKET directly can get the
/// whole unit killed, and FDSTORE describes systemd's fd store, which the
/// child cannot reach (sockhold sets its own: `fd_store.rs`).
pub const ENV_ADDRESSED_TO_SOCKHOLD: [&str; 7] = [
    "FDSTORE",
    "LISTEN_FDS",
    "LISTEN_PID",
    "LISTEN_FDNAMES",
    "NOTIFY_SOCKET",
    "WATCHDOG_USEC",
    "WATCHDOG_PID",
];

/// Why a command cannot be run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ResolveError {
    NotFound,
    NotExecutable(String),
}

impl ResolveError {
    pub fn exit_status(&self) -> i32 {
        match self {
            ResolveError::NotFound => crate::error::exit::NOT_FOUND,
            ResolveError::NotExecutable(_) => crate::error::exit::CANNOT_EXECUTE,
        }
    }
}

/// The short reason, for a generation that could not start at a reload or
/// restart (the program may have gone away since sockhold started).
impl std::fmt::Display for ResolveError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ResolveError::NotFound => f.write_str("command not found"),
            ResolveError::NotExecutable(why) => write!(f, "cannot execute: {why}"),
        }
    }
}

/// Finds the program as execvp(3) would: a name with a `/` is taken as it is,
/// any other is searched in PATH. Done in the parent before every spawn, so
/// that a reload picks up a new binary and the child never searches.
pub fn resolve_program(name: &OsStr, path_var: Option<&OsStr>) -> Result<PathBuf, ResolveError> {
    if name.is_empty() {
        return Err(ResolveError::NotFound);
    }
    if name.as_bytes().contains(&b'/') {
        let path = PathBuf::from(name);
        return check_executable(&path).map(|()| path);
    }
    let search = path_var.unwrap_or(OsStr::new("/usr/local/bin:/usr/bin:/bin"));
    let mut first_refusal = None;
    for dir in std::env::split_paths(search) {
        let dir = if dir.as_os_str().is_empty() {
            PathBuf::from(".")
        } else {
            dir
        };
        let candidate = dir.join(name);
        match check_executable(&candidate) {
            Ok(()) => return Ok(candidate),
            Err(ResolveError::NotFound) => {}
            Err(refusal) => {
                first_refusal.get_or_insert(refusal);
            }
        }
    }
    Err(first_refusal.unwrap_or(ResolveError::NotFound))
}

/// The one message for a command that cannot be run, with the shell's status (127/126).
pub fn resolve_command(
    name: &OsStr,
    path_var: Option<&OsStr>,
) -> Result<PathBuf, crate::error::Error> {
    resolve_program(name, path_var).map_err(|error| {
        let name = name.to_string_lossy();
        let message = match &error {
            ResolveError::NotFound => {
                format!("cannot run '{name}': command not found (check the name, or give a path)")
            }
            ResolveError::NotExecutable(why) => {
                format!("cannot run '{name}': {why} (make it an executable file: chmod +x)")
            }
        };
        crate::error::Error::new(error.exit_status(), message)
    })
}

fn check_executable(path: &Path) -> Result<(), ResolveError> {
    let metadata = match std::fs::metadata(path) {
        Ok(metadata) => metadata,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
            return Err(ResolveError::NotFound);
        }
        Err(error) => return Err(ResolveError::NotExecutable(error.to_string())),
    };
    if !metadata.is_file() {
        return Err(ResolveError::NotExecutable("not a regular file".into()));
    }
    if metadata.permissions().mode() & 0o111 == 0 {
        return Err(ResolveError::NotExecutable("no execute permission".into()));
    }
    nix::unistd::access(path, AccessFlags::X_OK)
        .map_err(|errno| ResolveError::NotExecutable(crate::error::errno_text(errno)))
}

/// sockhold's own environment without the variables addressed to it.
pub fn inherited_environment() -> Vec<(OsString, OsString)> {
    std::env::vars_os()
        .filter(|(key, _)| {
            !ENV_ADDRESSED_TO_SOCKHOLD
                .iter()
                .any(|own| key.as_bytes() == own.as_bytes())
        })
        .collect()
}

/// What becomes the child's stdin and stdout.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ChildStdio {
    /// sockhold's own.
    #[default]
    Inherited,
    /// inetd style: a connection on stdin and stdout.
    Connection(RawFd),
    /// `--stdin-socket`: a listening socket on stdin (spawn-fcgi's and
    /// inetd "wait" services' convention); stdout stays sockhold's.
    ListeningSocket(RawFd),
}

/// Everything one child needs, ready to use after fork without allocating.
pub struct ChildSpec {
    program: CString,
    argv: Vec<CString>,
    env: Vec<CString>,
    /// Placed at 3, 4, ... in this order.
    fds: Vec<RawFd>,
    stdio: ChildStdio,
    /// Whether to add `LISTEN_PID=<the child's pid>`.
    listen_pid: bool,
    /// Whether the child leads a new process group (`--signal-group`).
    process_group: bool,
    /// `--intercept-bind`: the seccomp filter to install before exec.
    intercept: Option<FilterProgram>,
}

impl ChildSpec {
    /// `env` must be complete except for LISTEN_PID, which is written in the
    /// child when `listen_pid` is set. Strings with a NUL byte are refused.
    pub fn new(
        program: &Path,
        args: &[OsString],
        env: &[(OsString, OsString)],
        fds: Vec<RawFd>,
        listen_pid: bool,
    ) -> Result<ChildSpec, String> {
        let to_c = |bytes: &[u8]| {
            CString::new(bytes)
                .map_err(|_| format!("'{}' contains a NUL byte", String::from_utf8_lossy(bytes)))
        };
        let program = to_c(program.as_os_str().as_bytes())?;
        let argv = args
            .iter()
            .map(|arg| to_c(arg.as_bytes()))
            .collect::<Result<Vec<_>, _>>()?;
        let env = env
            .iter()
            .map(|(key, value)| {
                let mut entry = Vec::with_capacity(key.len() + value.len() + 1);
                entry.extend_from_slice(key.as_bytes());
                entry.push(b'=');
                entry.extend_from_slice(value.as_bytes());
                to_c(&entry)
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(ChildSpec {
            program,
            argv,
            env,
            fds,
            stdio: ChildStdio::Inherited,
            listen_pid,
            process_group: false,
            intercept: None,
        })
    }

    /// What the child's stdin and stdout are (stderr stays sockhold's).
    pub fn set_stdio(&mut self, stdio: ChildStdio) {
        self.stdio = stdio;
    }

    /// Puts every child in a new process group of its own, which it leads.
    pub fn set_process_group(&mut self, process_group: bool) {
        self.process_group = process_group;
    }

    /// `--intercept-bind`: installs `filter` in the child before exec, with
    /// a listener fd that comes back in `Spawned::intercept`.
    pub fn set_intercept(&mut self, filter: Option<FilterProgram>) {
        self.intercept = filter;
    }

    /// Replaces the fds passed at 3, 4, ... (reusing the buffer: accept mode
    /// sets one connection per spawn).
    pub fn set_fds(&mut self, fds: &[RawFd]) {
        self.fds.clear();
        self.fds.extend_from_slice(fds);
    }
}

/// `KEY=VALUE` entries added to one spawn's environment (accept mode's
/// per-connection variables), kept in one buffer that is reused from spawn
/// to spawn so that a connection costs no allocation once it has grown.
#[derive(Debug, Default)]
pub struct ExtraEnv {
    /// NUL-terminated entries, back to back.
    bytes: Vec<u8>,
    /// Where each entry starts in `bytes`.
    starts: Vec<usize>,
}

impl ExtraEnv {
    pub fn clear(&mut self) {
        self.bytes.clear();
        self.starts.clear();
    }

    /// Adds `KEY=VALUE`. The value is formatted in place; a NUL in it (none
    /// of sockhold's values can hold one) would cut it short, not corrupt it.
    pub fn push(&mut self, key: &str, value: impl std::fmt::Display) {
        use std::io::Write;
        let start = self.bytes.len();
        self.starts.push(start);
        self.bytes.extend_from_slice(key.as_bytes());
        self.bytes.push(b'=');
        // Writing into a Vec cannot fail.
        let _ = write!(self.bytes, "{value}");
        self.bytes.push(0);
    }

    /// Pointers to the entries; valid until the next `clear` or `push`.
    fn pointers(&self) -> impl Iterator<Item = *const c_char> + '_ {
        self.starts
            .iter()
            .map(|&start| self.bytes[start..].as_ptr().cast())
    }

    fn len(&self) -> usize {
        self.starts.len()
    }
}

/// Why a child did not start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SpawnError {
    /// clone(2) failed in sockhold (too many processes, no memory).
    Fork(Errno),
    /// A step of the child's sequence before exec failed (its fds, process
    /// group, ...): the program was never tried.
    Setup(Errno),
    /// The child could not exec the program.
    Exec(Errno),
    /// `--intercept-bind`: the child could not install its seccomp filter
    /// (or hand its listener to sockhold); the program was never tried.
    Intercept(Errno),
}

impl SpawnError {
    /// What sockhold reports for it: the shell's 127 for a missing program
    /// (or interpreter), 126 for one that cannot be executed, 71 when no
    /// process could be made or set up.
    pub fn exit_status(&self) -> i32 {
        use crate::error::exit;
        match self {
            SpawnError::Fork(_) | SpawnError::Setup(_) => exit::OS,
            SpawnError::Intercept(Errno::EACCES | Errno::EPERM) => exit::PERMISSION,
            SpawnError::Intercept(_) => exit::OS,
            SpawnError::Exec(Errno::ENOENT | Errno::ENOTDIR) => exit::NOT_FOUND,
            SpawnError::Exec(_) => exit::CANNOT_EXECUTE,
        }
    }

    /// One line on why `program` did not start, with what to check where
    /// the errno points at something.
    pub fn describe(&self, program: &Path) -> String {
        match self {
            SpawnError::Fork(_) => self.to_string(),
            SpawnError::Setup(errno) => {
                let hint = match errno {
                    Errno::EMFILE | Errno::ENFILE => {
                        " (at the open-file limit: raise it with ulimit -n or LimitNOFILE=)"
                    }
                    _ => "",
                };
                format!("cannot start '{}': {}{hint}", program.display(), self)
            }
            SpawnError::Intercept(errno) => {
                let hint = crate::seccomp::refusal_hint(*errno);
                format!(
                    "cannot start '{}' with --intercept-bind: cannot install the seccomp filter: {}{hint}",
                    program.display(),
                    crate::error::errno_text(*errno)
                )
            }
            SpawnError::Exec(errno) => {
                let hint = match errno {
                    Errno::ENOEXEC => " (not a program for this machine; a script needs a #! line)",
                    Errno::ENOENT | Errno::ENOTDIR => " (for a script: check its #! interpreter)",
                    Errno::EACCES => " (check its execute permission and the filesystem's noexec)",
                    _ => "",
                };
                format!(
                    "cannot run '{}': {}{hint}",
                    program.display(),
                    crate::error::errno_text(*errno)
                )
            }
        }
    }
}

impl std::fmt::Display for SpawnError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SpawnError::Fork(errno) => {
                write!(f, "cannot fork: {}", crate::error::errno_text(*errno))
            }
            SpawnError::Setup(errno) => write!(
                f,
                "cannot set up the child before exec: {}",
                crate::error::errno_text(*errno)
            ),
            SpawnError::Exec(errno) => {
                write!(f, "cannot execute: {}", crate::error::errno_text(*errno))
            }
            SpawnError::Intercept(errno) => write!(
                f,
                "cannot install the seccomp filter of --intercept-bind: {}",
                crate::error::errno_text(*errno)
            ),
        }
    }
}

/// Size of the stack the child runs on between clone and exec.
const CHILD_STACK_SIZE: usize = 64 * 1024;

/// What starts children: owns the stack a child runs on between clone and
/// exec.
///
/// The child shares sockhold's memory (`CLONE_VM`), so it cannot run on
/// sockhold's own stack. It runs on this one instead: mapped in `new`, with
/// a guard page below it (an overflow faults instead of writing over other
/// memory), and unmapped on drop. Mapped up front rather than at the first
/// spawn, so that a failure shows at start-up and no spawn has to check.
///
/// `spawn` takes `&mut Spawner`, so two spawns can never run on one stack
/// at once, and the stack cannot be unmapped while a child runs on it. It
/// is free again when `spawn` returns: by then the child has exec'd (and
/// runs on a stack of its own) or exited (`CLONE_VFORK`). A Spawner is
/// neither `Send` nor `Sync`: it stays on the thread that made it, because
/// spawning relies on sockhold being single-threaded (see `spawn_with_env`).
pub struct Spawner {
    /// The whole mapping, guard page first.
    base: *mut libc::c_void,
    length: usize,
    /// Whether to ask clone for a pidfd: false once the kernel has shown
    /// that it gives none.
    pidfds: bool,
    /// `--parent-death-signal`: set in every child before exec.
    parent_death_signal: Option<nix::sys::signal::Signal>,
    /// Explicit, so that this does not depend on how the mapping is stored.
    _single_thread: PhantomData<*mut ()>,
}

impl Spawner {
    pub fn new() -> Result<Spawner, Errno> {
        // SAFETY: sysconf only reads a system value.
        let page = match unsafe { libc::sysconf(libc::_SC_PAGESIZE) } {
            size if size > 0 => size as usize,
            _ => 4096,
        };
        let length = CHILD_STACK_SIZE + page;
        // SAFETY: asks for a fresh private anonymous mapping; no memory in
        // use is touched.
        let base = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                length,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_STACK,
                -1,
                0,
            )
        };
        if base == libc::MAP_FAILED {
            return Err(Errno::last());
        }
        // From here on, dropping it unmaps it.
        let spawner = Spawner {
            base,
            length,
            pidfds: true,
            parent_death_signal: None,
            _single_thread: PhantomData,
        };
        // SAFETY: the first page of the mapping just made, which nothing
        // uses yet.
        if unsafe { libc::mprotect(base, page, libc::PROT_NONE) } != 0 {
            let errno = Errno::last();
            drop(spawner);
            return Err(errno);
        }
        Ok(spawner)
    }

    /// Has every child started from now on get `signal` from the kernel
    /// when sockhold dies (PR_SET_PDEATHSIG); None: nothing.
    pub fn set_parent_death_signal(&mut self, signal: Option<nix::sys::signal::Signal>) {
        self.parent_death_signal = signal;
    }

    /// The top of the child's stack (stacks grow down on Linux's
    /// architectures). Page-aligned, so aligned as every ABI wants it.
    fn stack_top(&mut self) -> *mut libc::c_void {
        self.base.cast::<u8>().wrapping_add(self.length).cast()
    }

    /// Stops asking for pidfds, and says so once.
    fn pidfds_unavailable(&mut self) {
        if std::mem::replace(&mut self.pidfds, false) {
            log::warn!(
                "pidfds unavailable (kernel older than 5.3?): children are signalled by pid"
            );
        }
    }
}

/// The one message for a Spawner that cannot be made (no memory for its
/// stack).
pub fn spawner_error(errno: Errno) -> crate::error::Error {
    crate::error::Error::new(
        crate::error::exit::OS,
        format!(
            "cannot map a stack for starting children: {}",
            crate::error::errno_text(errno)
        ),
    )
}

impl Drop for Spawner {
    fn drop(&mut self) {
        // SAFETY: the mapping made in `new`, which nothing refers to any
        // more: a child runs on it only inside `spawn`, which borrows the
        // Spawner.
        unsafe { libc::munmap(self.base, self.length) };
    }
}

const LISTEN_PID_PREFIX: &[u8] = b"LISTEN_PID=";
/// The digits of any u32 and the NUL.
const PID_TEXT_LEN: usize = 11;
/// `LISTEN_PID=` plus room for any pid and the NUL.
const LISTEN_PID_SLOT_LEN: usize = LISTEN_PID_PREFIX.len() + PID_TEXT_LEN;

/// A child that has exec'd.
#[derive(Debug)]
pub struct Spawned {
    pub pid: Pid,
    /// Its pidfd (born CLOEXEC): signals this child and no other, even once
    /// its pid is reused, and turns readable when it exits. None where the
    /// kernel has none.
    pub pidfd: Option<OwnedFd>,
    /// `--intercept-bind`: the seccomp listener fd of its filter (born
    /// CLOEXEC). None without it, or if it did not arrive (logged).
    pub intercept: Option<OwnedFd>,
}

/// Starts the child and returns it once it has exec'd. Exec failures come
/// back as `SpawnError::Exec` (the failed child is already reaped).
pub fn spawn(spawner: &mut Spawner, spec: &ChildSpec) -> Result<Spawned, SpawnError> {
    spawn_with_env(spawner, spec, &ExtraEnv::default())
}

/// `spawn`, with `extra` added to the spec's environment.
///
/// The child is started the way posix_spawn(3) does it on Linux:
/// clone(2) with `CLONE_VM | CLONE_VFORK`. It shares sockhold's memory
/// (no page tables copied, no copy-on-write faults afterwards) and sockhold
/// is suspended until the child has exec'd or exited, so the child's exec
/// errno can come back through plain memory. Per-connection mode spawns on
/// its hot path; this is what makes that cheap.
///
/// The pidfd comes from the same clone (`CLONE_PIDFD`): there is no moment
/// at which the child exists and sockhold holds only its pid.
pub fn spawn_with_env(
    spawner: &mut Spawner,
    spec: &ChildSpec,
    extra: &ExtraEnv,
) -> Result<Spawned, SpawnError> {
    // Pointer arrays for execve, built now: nothing may allocate after clone.
    let mut argv_ptrs: Vec<*const c_char> = Vec::with_capacity(spec.argv.len() + 1);
    argv_ptrs.extend(spec.argv.iter().map(|a| a.as_ptr()));
    argv_ptrs.push(std::ptr::null());
    let mut listen_pid_slot = [0u8; LISTEN_PID_SLOT_LEN];
    listen_pid_slot[..LISTEN_PID_PREFIX.len()].copy_from_slice(LISTEN_PID_PREFIX);
    // One pointer for both uses of the slot: envp reads the entry, the child
    // writes its digits.
    let listen_pid_entry = listen_pid_slot.as_mut_ptr();
    let mut envp_ptrs: Vec<*const c_char> = Vec::with_capacity(spec.env.len() + extra.len() + 2);
    envp_ptrs.extend(spec.env.iter().map(|e| e.as_ptr()));
    envp_ptrs.extend(extra.pointers());
    if spec.listen_pid {
        envp_ptrs.push(listen_pid_entry.cast_const().cast());
    }
    envp_ptrs.push(std::ptr::null());

    // Where each fd to pass is while the child moves them into 3..; the
    // child updates it as it goes.
    let moving: Vec<Cell<c_int>> = spec.fds.iter().map(|&fd| Cell::new(fd)).collect();
    // The child's errno if it cannot exec; stays 0 when the exec succeeds.
    let mut exec_errno: c_int = 0;
    // Whether the child got as far as execve.
    let mut exec_tried = false;
    // Whether the child failed at installing the seccomp filter.
    let mut intercept_failed = false;
    // `--intercept-bind`: how the seccomp listener fd, which exists only in
    // the child's fd table, reaches sockhold. The listener is created by
    // the child's own seccomp(2) call and is always CLOEXEC, so it is gone
    // at exec; and sockhold, suspended until then (CLONE_VFORK), cannot
    // take it with pidfd_getfd before. Leaving it inheritable at a known
    // number would leak it into the server. So the child sends it over a
    // socketpair made here (sendmsg with SCM_RIGHTS is async-signal-safe)
    // and closes its own copy; the message waits in the socket until
    // sockhold reads it, right after clone returns. The in-flight fd keeps
    // the listener open meanwhile, and no trapped call can come before
    // exec (the child makes none). Both ends are CLOEXEC: the child's copy
    // of its end is closed at step 5 and at exec.
    let channel = match &spec.intercept {
        Some(_) => Some(
            nix::sys::socket::socketpair(
                nix::sys::socket::AddressFamily::Unix,
                nix::sys::socket::SockType::Datagram,
                None,
                nix::sys::socket::SockFlag::SOCK_CLOEXEC,
            )
            .map_err(SpawnError::Fork)?,
        ),
        None => None,
    };
    let fprog = spec.intercept.as_ref().map(FilterProgram::as_fprog);
    let mut payload = [0u8; 1];
    let mut iov = libc::iovec {
        iov_base: payload.as_mut_ptr().cast(),
        iov_len: payload.len(),
    };
    let mut control = ControlBuffer([0; CONTROL_LEN]);
    // SAFETY: all zeroes is a valid msghdr (no name, no iov, no control).
    let mut message: libc::msghdr = unsafe { std::mem::zeroed() };
    message.msg_iov = &mut iov;
    message.msg_iovlen = 1;
    message.msg_control = control.0.as_mut_ptr().cast();
    message.msg_controllen = CONTROL_LEN as _;
    // SAFETY: `message` has a control buffer of CONTROL_LEN bytes, room
    // for one cmsghdr: the first header is inside it.
    let header = unsafe { libc::CMSG_FIRSTHDR(&message) };
    // SAFETY: CMSG_LEN only computes a length.
    let cmsg_len = unsafe { libc::CMSG_LEN(std::mem::size_of::<c_int>() as u32) };
    // SAFETY: `header` points into `control`, aligned for a cmsghdr
    // (ControlBuffer's alignment) and large enough for one.
    unsafe {
        header.write(libc::cmsghdr {
            cmsg_len: cmsg_len as _,
            cmsg_level: libc::SOL_SOCKET,
            cmsg_type: libc::SCM_RIGHTS,
        })
    };
    // SAFETY: the data of the header just written, inside `control`.
    let fd_slot = unsafe { libc::CMSG_DATA(header) }.cast::<c_int>();
    let intercept = match (&fprog, &channel) {
        (Some(fprog), Some((_, child_end))) => Some(InterceptPlan {
            fprog,
            channel: child_end.as_raw_fd(),
            message: &message,
            fd_slot,
            failed: &mut intercept_failed,
        }),
        _ => None,
    };
    let mut plan = ChildPlan {
        program: spec.program.as_ptr(),
        argv: argv_ptrs.as_ptr(),
        envp: envp_ptrs.as_ptr(),
        fds: &spec.fds,
        moving: &moving,
        stdio: spec.stdio,
        exec_errno: &mut exec_errno,
        exec_tried: &mut exec_tried,
        listen_pid_digits: spec.listen_pid.then(|| {
            listen_pid_entry
                .wrapping_add(LISTEN_PID_PREFIX.len())
                .cast::<[u8; PID_TEXT_LEN]>()
        }),
        process_group: spec.process_group,
        intercept,
        // sockhold's pid, for the child to check that its parent is still
        // the one that set the parent-death signal up.
        parent_death: spawner.parent_death_signal.map(|signal| ParentDeath {
            signal: signal as c_int,
            parent: std::process::id() as libc::pid_t,
        }),
    };
    let stack_top = spawner.stack_top();

    let all_signals = nix::sys::signal::SigSet::all();
    let mut saved_mask = nix::sys::signal::SigSet::empty();
    // Block every signal across clone: no handler of sockhold's may run in
    // the child (it would run on sockhold's memory) before the child has
    // reset the dispositions.
    nix::sys::signal::pthread_sigmask(
        nix::sys::signal::SigmaskHow::SIG_SETMASK,
        Some(&all_signals),
        Some(&mut saved_mask),
    )
    .map_err(SpawnError::Fork)?;
    // Where CLONE_PIDFD has the kernel write the child's pidfd: clone's
    // `parent_tid` argument. Stays -1 when no pidfd is made.
    let mut pidfd_raw: c_int = -1;
    let mut clone = |flags: c_int, pidfd_out: &mut c_int| {
        // SAFETY: the child runs `child_entry` on the Spawner's stack
        // (mapped for this alone, and borrowed by this call), and only
        // reads `plan` and writes the buffers it points to, which all
        // outlive the call because CLONE_VFORK suspends sockhold until the
        // child has exec'd or exited. Without CLONE_SIGHAND/CLONE_FILES the
        // child's signal dispositions and fd table are its own copies, so
        // its changes to them never reach sockhold. sockhold is
        // single-threaded: no lock can be held by another thread while the
        // child runs, and the child takes none. `pidfd_out` is a live int
        // for the kernel to write the pidfd to.
        let cloned = unsafe {
            libc::clone(
                child_entry,
                stack_top,
                flags,
                (&mut plan as *mut ChildPlan).cast(),
                pidfd_out as *mut c_int,
            )
        };
        if cloned < 0 {
            Err(Errno::last())
        } else {
            Ok(Pid::from_raw(cloned))
        }
    };
    let flags = libc::CLONE_VM | libc::CLONE_VFORK | libc::SIGCHLD;
    let wants_pidfd = spawner.pidfds;
    let cloned = if wants_pidfd {
        // Linux 5.2 and later; earlier kernels refuse the flag (EINVAL) or
        // ignore it (no pidfd written).
        match clone(flags | libc::CLONE_PIDFD, &mut pidfd_raw) {
            Err(Errno::EINVAL) => clone(flags, &mut pidfd_raw),
            cloned => cloned,
        }
    } else {
        clone(flags, &mut pidfd_raw)
    };
    // Restore in the parent whatever happened; signals that arrived are
    // delivered now.
    let _ = nix::sys::signal::pthread_sigmask(
        nix::sys::signal::SigmaskHow::SIG_SETMASK,
        Some(&saved_mask),
        None,
    );
    let pid = cloned.map_err(SpawnError::Fork)?;
    let pidfd = (pidfd_raw >= 0).then(|| {
        // SAFETY: the pidfd the kernel has just made for this child, which
        // nothing else owns.
        unsafe { OwnedFd::from_raw_fd(pidfd_raw) }
    });
    if wants_pidfd && pidfd.is_none() {
        spawner.pidfds_unavailable();
    }
    // SAFETY: the child has exec'd or exited (CLONE_VFORK), so nothing
    // writes this any more; volatile because the write came from outside
    // what the compiler can see.
    let errno = unsafe { std::ptr::read_volatile(&exec_errno) };
    // SAFETY: as for `exec_errno`.
    let intercept_failed = unsafe { std::ptr::read_volatile(&intercept_failed) };
    if errno != 0 {
        // The child has exited; reap it here so that its status does not
        // reach the supervisor as a generation's exit.
        let _ = nix::sys::wait::waitpid(pid, None);
        drop(pidfd);
        let errno = Errno::from_raw(errno);
        // SAFETY: as for `exec_errno` above.
        let exec_tried = unsafe { std::ptr::read_volatile(&exec_tried) };
        return Err(if exec_tried {
            SpawnError::Exec(errno)
        } else if intercept_failed {
            SpawnError::Intercept(errno)
        } else {
            SpawnError::Setup(errno)
        });
    }
    let intercept = channel.and_then(|(ours, _)| receive_listener(&ours, pid));
    Ok(Spawned {
        pid,
        pidfd,
        intercept,
    })
}

/// Room for one SCM_RIGHTS control message with one fd: CMSG_SPACE(4)
/// (16 + 8 on 64-bit Linux, rounded up).
const CONTROL_LEN: usize = 32;

/// A control message buffer, aligned as a cmsghdr must be.
#[repr(C, align(8))]
struct ControlBuffer([u8; CONTROL_LEN]);

/// Takes the seccomp listener the child sent before exec (see
/// `spawn_with_env`). It is there by now: the child sent it before exec,
/// and clone returned only after exec.
fn receive_listener(channel: &OwnedFd, pid: Pid) -> Option<OwnedFd> {
    use nix::sys::socket::{ControlMessageOwned, MsgFlags, recvmsg};
    let mut payload = [0u8; 1];
    let mut iov = [std::io::IoSliceMut::new(&mut payload)];
    let mut space = nix::cmsg_space!(RawFd);
    let received = recvmsg::<()>(
        channel.as_raw_fd(),
        &mut iov,
        Some(&mut space),
        MsgFlags::MSG_DONTWAIT | MsgFlags::MSG_CMSG_CLOEXEC,
    );
    let fd = received.ok().and_then(|message| {
        message.cmsgs().ok()?.find_map(|cmsg| match cmsg {
            ControlMessageOwned::ScmRights(fds) => fds.first().copied(),
            _ => None,
        })
    });
    let listener = fd.map(|fd| {
        // SAFETY: the fd the kernel has just installed for us from the
        // message (MSG_CMSG_CLOEXEC), which nothing else owns.
        unsafe { OwnedFd::from_raw_fd(fd) }
    });
    match listener {
        Some(listener) if crate::seccomp::is_listener(&listener) => Some(listener),
        _ => {
            log::error!(
                "pid {pid}: the seccomp listener of --intercept-bind did not arrive: its bind, listen and unlink calls fail with ENOSYS"
            );
            None
        }
    }
}

/// Where the cloned child starts.
extern "C" fn child_entry(plan: *mut libc::c_void) -> c_int {
    // SAFETY: `plan` is the `ChildPlan` that `spawn_with_env` passed to
    // clone, alive until the child has exec'd or exited (CLONE_VFORK).
    let plan = unsafe { &*plan.cast::<ChildPlan>() };
    // SAFETY: this is the freshly cloned child, and that is its plan.
    unsafe { run_child(plan) }
}

/// Raw pointers and numbers the child needs, all pointing into memory of
/// `spawn_with_env` that stays put while the child runs.
struct ChildPlan<'a> {
    program: *const c_char,
    argv: *const *const c_char,
    envp: *const *const c_char,
    fds: &'a [RawFd],
    /// Per entry of `fds`: where that fd is now, as the child moves it
    /// (`move_into_place`).
    moving: &'a [Cell<c_int>],
    stdio: ChildStdio,
    /// Where the child leaves errno when it cannot exec.
    exec_errno: *mut c_int,
    /// Set by the child just before execve: a failure after it is the
    /// exec's, one before it a set-up failure.
    exec_tried: *mut bool,
    /// The digits of the `LISTEN_PID=` entry that envp points to.
    listen_pid_digits: Option<*mut [u8; PID_TEXT_LEN]>,
    process_group: bool,
    intercept: Option<InterceptPlan>,
    parent_death: Option<ParentDeath>,
}

/// `--intercept-bind`, as the child needs it.
struct InterceptPlan {
    /// The filter program (seccomp(2) reads it).
    fprog: *const libc::sock_fprog,
    /// The child's end of the socketpair the listener fd goes through.
    channel: RawFd,
    /// A message with one SCM_RIGHTS fd, all but the fd filled in.
    message: *const libc::msghdr,
    /// Where in that message the fd goes.
    fd_slot: *mut c_int,
    /// Set when this step fails, so that the parent tells it apart.
    failed: *mut bool,
}

/// `--parent-death-signal`, as the child needs it.
#[derive(Clone, Copy)]
struct ParentDeath {
    signal: c_int,
    /// sockhold's pid: the parent the child must still have once the
    /// signal is set.
    parent: libc::pid_t,
}

/// A step of the child's sequence failed; errno says why (and
/// `ChildPlan::exec_tried` whether that step was execve).
struct Failed;

/// A system call's result, or `Failed` if it says it failed.
fn check(result: c_int) -> Result<c_int, Failed> {
    if result < 0 { Err(Failed) } else { Ok(result) }
}

/// The child side, between clone and exec: runs the sequence, and reports
/// the failure if it returns.
///
/// # Safety
/// Must only be called in a child cloned as in `spawn_with_env`, with
/// `plan` built there.
unsafe fn run_child(plan: &ChildPlan) -> ! {
    // SAFETY: called as this function is: in the child, with its plan.
    let Err(Failed) = unsafe { child_sequence(plan) };
    // SAFETY: as above. errno is still the failed step's: nothing ran since.
    unsafe { fail(plan) }
}

/// The numbered steps from clone to exec. Each is a plain system call;
/// nothing here allocates, locks, touches Rust's std I/O, or writes
/// sockhold's memory other than the buffers `plan` names. (It runs on
/// sockhold's memory: a glibc wrapper that keeps process-wide state, such
/// as setuid(2)'s, would need the raw system call here instead.) The fd
/// calls change the child's own fd table (no CLONE_FILES), never sockhold's.
/// Returns only if a step fails, with errno set.
///
/// # Safety
/// As `run_child`.
unsafe fn child_sequence(plan: &ChildPlan) -> Result<Infallible, Failed> {
    // 1. Default disposition for every signal. Rust ignores SIGPIPE and
    //    exec keeps ignored signals ignored, so this must be explicit.
    //    Signals stay blocked (as the parent left them) until step 7.
    // SAFETY: in the child, as this function is.
    unsafe { reset_signal_dispositions() };

    // 1b. A process group of its own, set before exec so that it is in
    //     place by the time the parent (resumed only after exec) may
    //     signal the group.
    if plan.process_group {
        // SAFETY: setpgid(2) on this process alone.
        check(unsafe { libc::setpgid(0, 0) })?;
    }

    // 1c. `--intercept-bind`: the seccomp filter, whose listener goes to
    //     sockhold over the channel (see `spawn_with_env`). Before the fd
    //     moves, which could land on the channel's number. Nothing from
    //     here to exec makes a trapped call: a trapped call now would wait
    //     for sockhold, which waits for this exec (CLONE_VFORK).
    if let Some(intercept) = &plan.intercept {
        // SAFETY: in the child, as this function is.
        if unsafe { install_intercept(intercept) }.is_err() {
            // SAFETY: the parent's slot, read once this child has exited.
            unsafe { std::ptr::write_volatile(intercept.failed, true) };
            return Err(Failed);
        }
    }

    // 2. The connection (inetd style) becomes stdin and stdout; or the
    //    listening socket (--stdin-socket) stdin. dup2 clears CLOEXEC on
    //    the copy.
    match plan.stdio {
        ChildStdio::Inherited => {}
        ChildStdio::Connection(connection) => {
            // SAFETY: dup2(2) replaces the child's stdin, as intended.
            check(unsafe { libc::dup2(connection, 0) })?;
            // SAFETY: likewise for stdout.
            check(unsafe { libc::dup2(connection, 1) })?;
        }
        ChildStdio::ListeningSocket(socket) => {
            // SAFETY: dup2(2) replaces the child's stdin, as intended.
            check(unsafe { libc::dup2(socket, 0) })?;
        }
    }
    // 3. Move the fds into 3, 4, ... without clobbering one still to be
    //    moved, and without parking them above the highest fd (at the fd
    //    limit there is no slot there): see `move_into_place`. dup2 clears
    //    CLOEXEC on each copy, which makes exactly these fds inheritable.
    // SAFETY: in the child, as this function is.
    let mut fd_table = unsafe { ChildFdTable::new() };
    move_into_place(&mut fd_table, plan.moving, FIRST_PASSED_FD)?;
    // 4. An fd that was already in its place was not copied: its CLOEXEC
    //    is cleared here.
    for (target, &fd) in (FIRST_PASSED_FD..).zip(plan.fds) {
        if fd == target {
            // SAFETY: F_SETFD changes only this fd's flags (fcntl(2)).
            check(unsafe { libc::fcntl(target, libc::F_SETFD, 0) })?;
        }
    }
    // 5. Everything above the passed fds is closed.
    // SAFETY: in the child, as this function is.
    unsafe { close_from(FIRST_PASSED_FD + plan.fds.len() as c_int) };

    // 6. LISTEN_PID: this process's own pid, written into the slot the
    //    parent reserved, so that the program that runs sees its own pid.
    if let Some(digits) = plan.listen_pid_digits {
        // SAFETY: getpid(2) only reads.
        let pid = unsafe { libc::getpid() };
        // SAFETY: the slot `spawn_with_env` reserved, alive while the child
        // runs and used by no one else until execve reads it.
        write_decimal(unsafe { &mut *digits }, pid as u32);
    }

    // 7. Empty signal mask (the parent blocked everything across clone).
    let empty = nix::sys::signal::SigSet::empty();
    // SAFETY: sigprocmask(2) with a valid set, not asking for the old one.
    unsafe { libc::sigprocmask(libc::SIG_SETMASK, empty.as_ref(), std::ptr::null_mut()) };

    // 7b. The parent-death signal (`--parent-death-signal`): from now on
    //     the kernel sends it to this process when sockhold dies, however
    //     it dies (prctl(2) PR_SET_PDEATHSIG; the thread that cloned us is
    //     sockhold's only thread). Set this late: a change of credentials
    //     clears it, and with the mask empty, a signal raised here is
    //     delivered before kill(2) returns. sockhold may have died before
    //     the prctl took effect (SIGKILLed while clone(2) waits for this
    //     child to exec): then no signal will come, and getppid(2) names
    //     whoever adopted us instead. The child sends the signal to itself
    //     then, and does not run the program without its supervisor.
    if let Some(death) = plan.parent_death {
        // SAFETY: prctl(2) PR_SET_PDEATHSIG with a signal number; it
        // changes an attribute of this process only.
        check(unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, death.signal as libc::c_ulong) })?;
        // SAFETY: getppid(2) only reads.
        let parent = unsafe { libc::getppid() };
        if parent != death.parent {
            // SAFETY: getpid(2) only reads (glibc caches no pid since 2.25,
            // and the cache would be sockhold's: we share its memory).
            let me = unsafe { libc::getpid() };
            // SAFETY: kill(2) to this process alone. Not raise(3): it
            // would read the thread id from sockhold's thread data, which
            // this child shares.
            unsafe { libc::kill(me, death.signal) };
            // Still here: a signal whose default action does not end a
            // process (WINCH, URG, CHLD, CONT), or a stop that was ended.
            // SAFETY: _exit(2) ends the child at once (see `fail`).
            unsafe { libc::_exit(128 + death.signal) };
        }
    }

    // 8. Run the program. Only returns on failure. Every failure before
    //    this point is a set-up failure, not an exec failure: the program
    //    was never tried.
    // SAFETY: the parent's slot, which it reads only once this child has
    // exited or exec'd (CLONE_VFORK).
    unsafe { std::ptr::write_volatile(plan.exec_tried, true) };
    // SAFETY: NUL-terminated program, argv and envp, built and kept alive
    // by `spawn_with_env`.
    unsafe { libc::execve(plan.program, plan.argv, plan.envp) };
    Err(Failed)
}

/// Installs the filter and sends its listener fd to sockhold.
///
/// A filter needs either CAP_SYS_ADMIN or no_new_privs (seccomp(2)):
/// without the capability (EACCES), PR_SET_NO_NEW_PRIVS is set and the
/// filter installed again. Then setuid and file-capability programs run by
/// the server no longer gain privileges (a documented cost of
/// `--intercept-bind`).
///
/// # Safety
/// Child side only (see `run_child`).
unsafe fn install_intercept(intercept: &InterceptPlan) -> Result<(), Failed> {
    let install = || {
        // SAFETY: seccomp(2) reads the filter program `fprog` points to,
        // kept alive by `spawn_with_env`; it changes this process only.
        unsafe {
            libc::syscall(
                libc::SYS_seccomp,
                libc::SECCOMP_SET_MODE_FILTER,
                libc::SECCOMP_FILTER_FLAG_NEW_LISTENER,
                intercept.fprog,
            )
        }
    };
    let mut listener = install();
    if listener < 0 && Errno::last_raw() == libc::EACCES {
        // SAFETY: prctl(2) PR_SET_NO_NEW_PRIVS changes this process only.
        check(unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) })?;
        listener = install();
    }
    let listener = check(listener as c_int)?;
    // SAFETY: the slot in the message `spawn_with_env` prepared, which no
    // one else uses until the parent reads the message.
    unsafe { intercept.fd_slot.write_unaligned(listener) };
    // SAFETY: sendmsg(2) on the child's copy of the channel, with the
    // message prepared before the fork; it only reads it.
    let sent = unsafe { libc::sendmsg(intercept.channel, intercept.message, 0) };
    // SAFETY: close(2) of the child's own listener fd: the copy in the
    // message keeps the listener open.
    unsafe { libc::close(listener) };
    check(sent as c_int).map(|_| ())
}

/// The fd calls `move_into_place` makes, on the child's own fd table (or,
/// in tests, on a model of one).
trait FdTable {
    /// dup2(2): `from` copied onto `to`, without CLOEXEC.
    fn dup2(&mut self, from: c_int, to: c_int) -> Result<(), Failed>;
    /// fcntl(2) `F_DUPFD_CLOEXEC`: `fd` copied to the lowest free fd from
    /// `lowest` up.
    fn dup_from(&mut self, fd: c_int, lowest: c_int) -> Result<c_int, Failed>;
}

/// The child's own fd table (no CLONE_FILES: a copy of sockhold's).
struct ChildFdTable(());

impl ChildFdTable {
    /// # Safety
    /// Child side only (see `run_child`): the calls change the fd table they
    /// run in.
    unsafe fn new() -> ChildFdTable {
        ChildFdTable(())
    }
}

impl FdTable for ChildFdTable {
    fn dup2(&mut self, from: c_int, to: c_int) -> Result<(), Failed> {
        // SAFETY: in the child (see `new`); what `to` held is either passed
        // on elsewhere already or not wanted (`move_into_place`).
        check(unsafe { libc::dup2(from, to) }).map(|_| ())
    }

    fn dup_from(&mut self, fd: c_int, lowest: c_int) -> Result<c_int, Failed> {
        // SAFETY: F_DUPFD_CLOEXEC only adds an fd (fcntl(2)), closes none.
        check(unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, lowest) })
    }
}

/// Marks an fd of `moving` that is in its place.
const PLACED: c_int = -1;

/// Moves the fd at `moving[i]` to `first + i`, for every i: a parallel
/// move. A move whose target no other pending move still reads from goes
/// at once; when only cycles are left (fds passed in another order than
/// sockhold holds them, e.g. 4 to 3 and 3 to 4), one fd of a cycle is
/// copied to the lowest free fd from `first + moving.len()` up, which
/// breaks it. So no fd is needed above the highest one, and a free fd
/// only for a cycle. `moving` is updated as fds move (`PLACED` once in
/// place); nothing is allocated.
fn move_into_place(
    table: &mut impl FdTable,
    moving: &[Cell<c_int>],
    first: c_int,
) -> Result<(), Failed> {
    let spare_from = first + moving.len() as c_int;
    loop {
        let mut moved = false;
        let mut blocked = None;
        for (target, source) in (first..).zip(moving) {
            let from = source.get();
            if from == PLACED {
                continue;
            }
            if from == target {
                // Already there. Nothing else moves onto `target` (each
                // target is one entry's), so other entries with the same
                // fd can still copy it from here.
                source.set(PLACED);
                moved = true;
                continue;
            }
            if moving.iter().any(|other| other.get() == target) {
                // `target` holds an fd still to be copied elsewhere.
                blocked = Some(target);
                continue;
            }
            table.dup2(from, target)?;
            source.set(PLACED);
            moved = true;
        }
        if moved {
            continue;
        }
        let Some(target) = blocked else {
            return Ok(());
        };
        // Only cycles are left: the fd at `target` is read from a copy,
        // which frees `target` for its own move.
        let copy = table.dup_from(target, spare_from)?;
        for source in moving {
            if source.get() == target {
                source.set(copy);
            }
        }
    }
}

/// Sets every signal to its default disposition, including the two that
/// glibc reserves for itself (32 and 33) and refuses to touch through
/// sigaction(3): a parent that ignored them would otherwise pass that on.
///
/// # Safety
/// Child side only (see `run_child`).
#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
unsafe fn reset_signal_dispositions() {
    /// The kernel's `struct sigaction` on these architectures (uapi
    /// asm-generic/signal.h with SA_RESTORER): handler, flags, restorer, mask.
    #[repr(C)]
    struct KernelSigaction {
        handler: usize,
        flags: libc::c_ulong,
        restorer: usize,
        mask: u64,
    }
    let default_action = KernelSigaction {
        handler: libc::SIG_DFL,
        flags: 0,
        restorer: 0,
        mask: 0,
    };
    for signal in 1..=64 {
        // SAFETY: rt_sigaction(2) with a valid struct and an 8-byte sigset;
        // it fails harmlessly for SIGKILL and SIGSTOP.
        unsafe {
            libc::syscall(
                libc::SYS_rt_sigaction,
                signal,
                &default_action as *const KernelSigaction,
                std::ptr::null_mut::<KernelSigaction>(),
                std::mem::size_of::<u64>(),
            )
        };
    }
}

/// Elsewhere: sigaction(3), which leaves glibc's reserved signals alone.
///
/// # Safety
/// Child side only (see `run_child`).
#[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
unsafe fn reset_signal_dispositions() {
    // SAFETY: all zeroes is a valid sigaction: SIG_DFL, no flags, an empty
    // mask.
    let default_action: libc::sigaction = unsafe { std::mem::zeroed() };
    for signal in 1..libc::SIGRTMAX() + 1 {
        // SAFETY: sigaction(2) with a valid action, not asking for the old
        // one; it fails harmlessly for SIGKILL and SIGSTOP.
        unsafe { libc::sigaction(signal, &default_action, std::ptr::null_mut()) };
    }
}

/// Reports errno to the parent and ends the child: 127 when the program is
/// missing, 126 when it cannot be executed (as shells and tini do), 71 when
/// a step before exec failed and the program was never tried.
///
/// # Safety
/// Child side only (see `run_child`).
unsafe fn fail(plan: &ChildPlan) -> ! {
    let errno = Errno::last_raw();
    // SAFETY: the parent's errno slot, which it reads only once this child
    // has exited (CLONE_VFORK).
    unsafe { std::ptr::write_volatile(plan.exec_errno, errno) };
    // SAFETY: the slot this child wrote before execve, if it got there.
    let exec_tried = unsafe { std::ptr::read_volatile(plan.exec_tried) };
    let status = if !exec_tried {
        crate::error::exit::OS
    } else if errno == libc::ENOENT || errno == libc::ENOTDIR {
        crate::error::exit::NOT_FOUND
    } else {
        crate::error::exit::CANNOT_EXECUTE
    };
    // SAFETY: _exit(2) ends the child at once, running no atexit handler
    // or destructor (they would run on sockhold's memory).
    unsafe { libc::_exit(status) }
}

/// Closes every fd from `first` up.
///
/// # Safety
/// Child side only (see `run_child`).
unsafe fn close_from(first: c_int) {
    // SAFETY: close_range(2) on the child's own fd table.
    let closed = unsafe {
        libc::syscall(
            libc::SYS_close_range,
            first as libc::c_uint,
            libc::c_uint::MAX,
            0,
        )
    };
    if closed == 0 {
        return;
    }
    // Kernels before 5.9: close one by one up to the fd limit.
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit(2) fills in `limit`, a valid rlimit.
    let max = if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } == 0 {
        limit.rlim_cur.min(1 << 20) as c_int
    } else {
        4096
    };
    for fd in first..max {
        // SAFETY: close(2) on the child's own fd table, as above.
        unsafe { libc::close(fd) };
    }
}

/// Writes `value` in decimal followed by a NUL, without allocating.
fn write_decimal(out: &mut [u8; PID_TEXT_LEN], mut value: u32) {
    let mut digits = [0u8; PID_TEXT_LEN - 1];
    let mut len = 0;
    loop {
        digits[len] = b'0' + (value % 10) as u8;
        len += 1;
        value /= 10;
        if value == 0 {
            break;
        }
    }
    for (place, digit) in out.iter_mut().zip(digits[..len].iter().rev()) {
        *place = *digit;
    }
    out[len] = 0;
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::ffi::CStr;

    #[test]
    fn decimal_writer_matches_format() {
        for value in [0u32, 7, 10, 4242, 4_194_304, u32::MAX] {
            let mut buffer = [0xffu8; PID_TEXT_LEN];
            write_decimal(&mut buffer, value);
            let text = CStr::from_bytes_until_nul(&buffer).unwrap();
            assert_eq!(text.to_str().unwrap(), value.to_string());
        }
    }

    #[test]
    fn resolves_like_execvp() {
        let path = Some(OsStr::new("/nonexistent:/usr/bin:/bin"));
        assert!(
            resolve_program(OsStr::new("sh"), path)
                .unwrap()
                .ends_with("sh")
        );
        assert_eq!(
            resolve_program(OsStr::new("no-such-program-x"), path),
            Err(ResolveError::NotFound)
        );
        assert_eq!(
            resolve_program(OsStr::new("/nonexistent/x"), path),
            Err(ResolveError::NotFound)
        );
        let plain_file =
            std::env::temp_dir().join(format!("sockhold-plain-{}", std::process::id()));
        std::fs::write(&plain_file, "not a program").unwrap();
        let refused = resolve_program(plain_file.as_os_str(), path);
        std::fs::remove_file(&plain_file).unwrap();
        assert!(matches!(refused, Err(ResolveError::NotExecutable(_))));
        assert!(matches!(
            resolve_program(OsStr::new("/tmp"), path),
            Err(ResolveError::NotExecutable(_))
        ));
    }

    fn spec_for(program: &Path) -> ChildSpec {
        ChildSpec::new(program, &[program.into()], &[], Vec::new(), false).unwrap()
    }

    fn true_program() -> PathBuf {
        resolve_program(OsStr::new("true"), Some(OsStr::new("/usr/bin:/bin"))).unwrap()
    }

    /// pidfd_send_signal(2) with signal 0: only asks whether it would reach.
    fn probe(pidfd: &OwnedFd) -> Result<(), Errno> {
        use std::os::fd::AsRawFd;
        // SAFETY: a pidfd this test owns, signal 0 (nothing is sent), no
        // siginfo, no flags.
        let result = unsafe {
            libc::syscall(
                libc::SYS_pidfd_send_signal,
                pidfd.as_raw_fd(),
                0,
                std::ptr::null::<libc::siginfo_t>(),
                0,
            )
        };
        if result == 0 {
            Ok(())
        } else {
            Err(Errno::last())
        }
    }

    #[test]
    fn spawned_child_comes_with_a_pidfd_that_reaches_it_and_reports_its_exit() {
        use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
        use nix::sys::wait::{WaitStatus, waitpid};
        use std::os::fd::AsFd;
        let mut spawner = Spawner::new().unwrap();
        let spawned = spawn(&mut spawner, &spec_for(&true_program())).unwrap();
        let pidfd = spawned.pidfd.expect("a pidfd (Linux 5.3 or later)");
        let fd_flags = nix::fcntl::fcntl(&pidfd, nix::fcntl::FcntlArg::F_GETFD).unwrap();
        assert_ne!(fd_flags & libc::FD_CLOEXEC, 0, "born CLOEXEC");
        // Until it is reaped, the pidfd reaches the child, exited or not.
        assert_eq!(probe(&pidfd), Ok(()));
        let mut readable = [PollFd::new(pidfd.as_fd(), PollFlags::POLLIN)];
        assert_eq!(poll(&mut readable, PollTimeout::from(10_000u16)), Ok(1));
        assert!(readable[0].revents().unwrap().contains(PollFlags::POLLIN));
        assert_eq!(
            waitpid(spawned.pid, None),
            Ok(WaitStatus::Exited(spawned.pid, 0))
        );
        // Reaped: the pid may be reused, and the pidfd reaches no process.
        assert_eq!(probe(&pidfd), Err(Errno::ESRCH));
    }

    #[test]
    fn without_pidfds_a_child_still_starts() {
        let mut spawner = Spawner::new().unwrap();
        spawner.pidfds = false;
        let spawned = spawn(&mut spawner, &spec_for(&true_program())).unwrap();
        assert!(spawned.pidfd.is_none());
        assert_eq!(
            nix::sys::wait::waitpid(spawned.pid, None),
            Ok(nix::sys::wait::WaitStatus::Exited(spawned.pid, 0))
        );
    }

    #[test]
    fn exec_failure_comes_back_as_the_childs_errno() {
        let mut spawner = Spawner::new().unwrap();
        let error = spawn(&mut spawner, &spec_for(Path::new("/nonexistent/program"))).unwrap_err();
        assert_eq!(error, SpawnError::Exec(Errno::ENOENT));
    }

    #[test]
    fn a_command_that_cannot_run_gets_one_message_and_the_shells_status() {
        let path = Some(OsStr::new("/nonexistent"));
        let missing = resolve_command(OsStr::new("no-such-program-x"), path).unwrap_err();
        assert_eq!(missing.exit_status, 127);
        assert_eq!(
            missing.message,
            "cannot run 'no-such-program-x': command not found (check the name, or give a path)"
        );
        let directory = resolve_command(OsStr::new("/tmp"), path).unwrap_err();
        assert_eq!(directory.exit_status, 126);
        assert_eq!(
            directory.message,
            "cannot run '/tmp': not a regular file (make it an executable file: chmod +x)"
        );
    }

    #[test]
    fn exec_failures_are_described_with_a_hint_and_the_shells_status() {
        let program = Path::new("/srv/app");
        let cases = [
            (
                SpawnError::Exec(Errno::ENOEXEC),
                126,
                "cannot run '/srv/app': exec format error (not a program for this machine; a script needs a #! line)",
            ),
            (
                SpawnError::Exec(Errno::ENOENT),
                127,
                "cannot run '/srv/app': no such file or directory (for a script: check its #! interpreter)",
            ),
            (
                SpawnError::Exec(Errno::EACCES),
                126,
                "cannot run '/srv/app': permission denied (check its execute permission and the filesystem's noexec)",
            ),
            (
                SpawnError::Exec(Errno::E2BIG),
                126,
                "cannot run '/srv/app': argument list too long",
            ),
            (
                SpawnError::Fork(Errno::EAGAIN),
                71,
                "cannot fork: try again",
            ),
        ];
        for (error, status, text) in cases {
            assert_eq!(error.exit_status(), status, "{error:?}");
            assert_eq!(error.describe(program), text);
        }
    }

    #[test]
    fn a_failure_before_exec_is_reported_as_set_up_not_as_exec() {
        let mut spawner = Spawner::new().unwrap();
        let mut spec = spec_for(&true_program());
        // No fd this high is open: the move into 3 fails with EBADF.
        spec.set_fds(&[1 << 20]);
        let error = spawn(&mut spawner, &spec).unwrap_err();
        assert_eq!(error, SpawnError::Setup(Errno::EBADF));
        assert_eq!(error.exit_status(), 71);
        assert_eq!(
            error.describe(Path::new("/srv/app")),
            "cannot start '/srv/app': cannot set up the child before exec: bad file number"
        );
        assert_eq!(
            SpawnError::Setup(Errno::EMFILE).describe(Path::new("/srv/app")),
            "cannot start '/srv/app': cannot set up the child before exec: too many open files (at the open-file limit: raise it with ulimit -n or LimitNOFILE=)"
        );
    }

    /// An fd table as the kernel keeps one: which open file each fd
    /// refers to, and no fd at or above `limit`.
    struct ModelTable {
        files: std::collections::BTreeMap<c_int, &'static str>,
        limit: c_int,
        calls: usize,
    }

    impl ModelTable {
        /// Every fd below `limit` open (`full`), or only those of `open`.
        fn new(open: &[(c_int, &'static str)], limit: c_int, full: bool) -> ModelTable {
            let mut files: std::collections::BTreeMap<c_int, &'static str> =
                open.iter().copied().collect();
            if full {
                for fd in 0..limit {
                    files.entry(fd).or_insert("other");
                }
            }
            ModelTable {
                files,
                limit,
                calls: 0,
            }
        }
    }

    impl FdTable for ModelTable {
        fn dup2(&mut self, from: c_int, to: c_int) -> Result<(), Failed> {
            self.calls += 1;
            let file = *self.files.get(&from).ok_or(Failed)?;
            if to >= self.limit {
                return Err(Failed);
            }
            self.files.insert(to, file);
            Ok(())
        }

        fn dup_from(&mut self, fd: c_int, lowest: c_int) -> Result<c_int, Failed> {
            self.calls += 1;
            let file = *self.files.get(&fd).ok_or(Failed)?;
            let free = (lowest..self.limit)
                .find(|fd| !self.files.contains_key(fd))
                .ok_or(Failed)?;
            self.files.insert(free, file);
            Ok(free)
        }
    }

    /// Moves `sources` into 3.. on `table` and checks that each target got
    /// the file its source had.
    fn assert_moves(table: &mut ModelTable, sources: &[c_int]) {
        let expected: Vec<&str> = sources.iter().map(|fd| table.files[fd]).collect();
        let moving: Vec<Cell<c_int>> = sources.iter().map(|&fd| Cell::new(fd)).collect();
        assert!(
            move_into_place(table, &moving, FIRST_PASSED_FD).is_ok(),
            "moving {sources:?}"
        );
        let got: Vec<&str> = (FIRST_PASSED_FD..)
            .take(sources.len())
            .map(|fd| table.files[&fd])
            .collect();
        assert_eq!(got, expected, "moving {sources:?}");
        assert!(moving.iter().all(|fd| fd.get() == PLACED));
    }

    #[test]
    fn fds_move_into_place_at_the_fd_limit_without_a_slot_above_them() {
        // The connection is the highest fd below the limit and the table
        // is full: the old shuffle parked it above, where no fd can be.
        let mut table = ModelTable::new(&[(9, "connection")], 10, true);
        assert_moves(&mut table, &[9]);
        assert_eq!(table.calls, 1, "one dup2");
        // Sockets already in place cost nothing (step 4 clears CLOEXEC).
        let mut table = ModelTable::new(&[(3, "a"), (4, "b")], 5, true);
        assert_moves(&mut table, &[3, 4]);
        assert_eq!(table.calls, 0);
        // Sources inside the targets, moved in an order that clobbers none.
        let mut table = ModelTable::new(&[(4, "a"), (5, "b"), (9, "c")], 10, true);
        assert_moves(&mut table, &[4, 5, 9]);
    }

    #[test]
    fn cycles_and_repeated_fds_are_moved_through_one_free_fd() {
        let files = [(3, "a"), (4, "b"), (5, "c")];
        // Every order of three fds held at 3, 4, 5, with the same fd
        // passed twice as well; one fd free (the lowest above the targets,
        // not one above the highest).
        let orders: [&[c_int]; 9] = [
            &[3, 4, 5],
            &[4, 3, 5],
            &[5, 4, 3],
            &[3, 5, 4],
            &[4, 5, 3],
            &[5, 3, 4],
            &[4, 3, 4],
            &[4, 4, 4],
            &[5, 3, 4, 3],
        ];
        for order in orders {
            let targets_end = FIRST_PASSED_FD + order.len() as c_int;
            let mut open: Vec<(c_int, &'static str)> = files.to_vec();
            open.extend((targets_end + 1..12).map(|fd| (fd, "other")));
            let mut table = ModelTable::new(&open, 12, false);
            for fd in 0..3 {
                table.files.insert(fd, "stdio");
            }
            assert_moves(&mut table, order);
        }
        // A cycle with no free fd at all is a set-up failure, not a hang.
        let mut table = ModelTable::new(&files, 6, true);
        let moving: Vec<Cell<c_int>> = [4, 3].iter().map(|&fd| Cell::new(fd)).collect();
        assert!(move_into_place(&mut table, &moving, FIRST_PASSED_FD).is_err());
    }

    #[test]
    fn environment_drops_what_is_addressed_to_sockhold() {
        let env = inherited_environment();
        for (key, _) in env {
            assert!(!ENV_ADDRESSED_TO_SOCKHOLD.iter().any(|own| key == *own));
        }
    }
}
