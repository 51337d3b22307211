//! Starting one child: the fd layout, environment and signal state it gets,
//! and the exec error that comes back if it cannot run.
//!
//! Invariants (see DESIGN.md §3):
//! - Everything is prepared before fork: argv/envp pointer arrays, the
//!   `LISTEN_PID=` slot, the fd moves. Between fork and exec the child makes
//!   only async-signal-safe system calls and allocates nothing.
//! - The child gets fds 0-2 (or the connection as 0 and 1), the given fds at
//!   3, 4, ... and no other fd.
//! - Signals are blocked around fork so that no handler of sockhold's runs in
//!   the child; the child resets every disposition to default and unblocks
//!   everything just before exec.
//!
//! This file is the main home of `unsafe` in sockhold.

use nix::errno::Errno;
use nix::libc::{self, c_char, c_int};
use nix::unistd::{AccessFlags, Pid};
use std::ffi::{CString, OsStr, OsString};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

/// Lowest fd the passed sockets start at (sd_listen_fds(3): SD_LISTEN_FDS_START).
pub const FIRST_PASSED_FD: RawFd = 3;

/// Environment variables addressed to sockhold itself by whoever started
/// it. They must never reach a child: LISTEN_* would name the wrong pid and
/// fds, and a child talking to systemd's NOTIFY_SOCKET directly can get the
/// whole unit killed.
pub const ENV_ADDRESSED_TO_SOCKHOLD: [&str; 6] = [
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

/// Everything one child needs, ready to use after fork without allocating.
pub struct ChildSpec {
    program: CString,
    argv: Vec<CString>,
    env: Vec<CString>,
    /// Placed at 3, 4, ... in this order.
    fds: Vec<RawFd>,
    /// inetd style: this fd becomes the child's stdin and stdout.
    stdio: Option<RawFd>,
    /// Whether to add `LISTEN_PID=<the child's pid>`.
    listen_pid: bool,
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
            stdio: None,
            listen_pid,
        })
    }
}

/// Why a child did not start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SpawnError {
    /// fork(2) or pipe2(2) failed in sockhold.
    Fork(Errno),
    /// The child could not exec the program.
    Exec(Errno),
}

impl std::fmt::Display for SpawnError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SpawnError::Fork(errno) => {
                write!(f, "cannot fork: {}", crate::error::errno_text(*errno))
            }
            SpawnError::Exec(errno) => {
                write!(f, "cannot execute: {}", crate::error::errno_text(*errno))
            }
        }
    }
}

/// `LISTEN_PID=` plus room for any pid and the NUL.
const LISTEN_PID_PREFIX: &[u8] = b"LISTEN_PID=";
const LISTEN_PID_SLOT_LEN: usize = LISTEN_PID_PREFIX.len() + 21;

/// Starts the child and returns its pid once it has exec'd. Exec failures
/// come back as `SpawnError::Exec` (the failed child is already reaped).
pub fn spawn(spec: &ChildSpec) -> Result<Pid, SpawnError> {
    // Pointer arrays for execve, built now: nothing may allocate after fork.
    let mut argv_ptrs: Vec<*const c_char> = spec.argv.iter().map(|a| a.as_ptr()).collect();
    argv_ptrs.push(std::ptr::null());
    let mut listen_pid_slot = [0u8; LISTEN_PID_SLOT_LEN];
    listen_pid_slot[..LISTEN_PID_PREFIX.len()].copy_from_slice(LISTEN_PID_PREFIX);
    let mut envp_ptrs: Vec<*const c_char> = Vec::with_capacity(spec.env.len() + 2);
    envp_ptrs.extend(spec.env.iter().map(|e| e.as_ptr()));
    if spec.listen_pid {
        envp_ptrs.push(listen_pid_slot.as_ptr().cast());
    }
    envp_ptrs.push(std::ptr::null());

    let (error_read, error_write) =
        nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(SpawnError::Fork)?;
    // Where fds are parked on their way down into 3..: above every fd
    // involved, so that no dup2 into 3.. can clobber a source still needed.
    let passed = spec.fds.len() as RawFd;
    let park_above = spec
        .fds
        .iter()
        .copied()
        .chain(spec.stdio)
        .chain([error_write.as_raw_fd(), FIRST_PASSED_FD + passed])
        .max()
        .unwrap_or(FIRST_PASSED_FD)
        + 1;
    // The child writes its parked fd numbers here (into its own copy).
    let mut parked = vec![0 as c_int; spec.fds.len()];
    let plan = ChildPlan {
        program: spec.program.as_ptr(),
        argv: argv_ptrs.as_ptr(),
        envp: envp_ptrs.as_ptr(),
        fds: &spec.fds,
        parked: parked.as_mut_ptr(),
        stdio: spec.stdio,
        park_above,
        error_pipe: error_write.as_raw_fd(),
        listen_pid_digits: if spec.listen_pid {
            Some(listen_pid_slot[LISTEN_PID_PREFIX.len()..].as_mut_ptr())
        } else {
            None
        },
    };

    let all_signals = nix::sys::signal::SigSet::all();
    let mut saved_mask = nix::sys::signal::SigSet::empty();
    // Block every signal across fork so no handler of sockhold's runs in the
    // child before it has reset the dispositions.
    nix::sys::signal::pthread_sigmask(
        nix::sys::signal::SigmaskHow::SIG_SETMASK,
        Some(&all_signals),
        Some(&mut saved_mask),
    )
    .map_err(SpawnError::Fork)?;
    // SAFETY: sockhold is single-threaded, so the child is a full copy in a
    // consistent state; the child runs only `run_child`, which makes
    // async-signal-safe system calls on data prepared above and never returns.
    let forked = unsafe { libc::fork() };
    if forked == 0 {
        // SAFETY: we are the child of the fork above; `plan` points into
        // memory that the fork copied and nothing has freed.
        unsafe { run_child(&plan) }
    }
    let fork_errno = Errno::last();
    // Restore in the parent whatever happened; signals that arrived are
    // delivered now.
    let _ = nix::sys::signal::pthread_sigmask(
        nix::sys::signal::SigmaskHow::SIG_SETMASK,
        Some(&saved_mask),
        None,
    );
    drop(error_write);
    if forked < 0 {
        return Err(SpawnError::Fork(fork_errno));
    }
    let pid = Pid::from_raw(forked);
    // The pipe closes on a successful exec (it is CLOEXEC), or carries the
    // child's errno. Reading it waits only for the child's own exec.
    let mut errno_bytes = [0u8; 4];
    let mut got = 0;
    while got < errno_bytes.len() {
        match nix::unistd::read(&error_read, &mut errno_bytes[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(Errno::EINTR) => continue,
            Err(_) => break,
        }
    }
    if got == errno_bytes.len() {
        // The child has exited (or is about to); reap it here so its status
        // does not reach the supervisor as a generation's exit.
        let _ = nix::sys::wait::waitpid(pid, None);
        return Err(SpawnError::Exec(Errno::from_raw(i32::from_ne_bytes(
            errno_bytes,
        ))));
    }
    Ok(pid)
}

/// Raw pointers and numbers the child needs; all valid across fork.
struct ChildPlan<'a> {
    program: *const c_char,
    argv: *const *const c_char,
    envp: *const *const c_char,
    fds: &'a [RawFd],
    /// Room for one parked copy per entry of `fds`.
    parked: *mut c_int,
    stdio: Option<RawFd>,
    park_above: RawFd,
    error_pipe: RawFd,
    listen_pid_digits: Option<*mut u8>,
}

/// The child side, between fork and exec. Each step is a plain system call;
/// nothing here allocates, locks or touches Rust's std I/O.
///
/// # Safety
/// Must only be called in a freshly forked child of a single-threaded
/// process, with `plan` built as in `spawn`.
unsafe fn run_child(plan: &ChildPlan) -> ! {
    // SAFETY: every call below is async-signal-safe (signal-safety(7)) and
    // every pointer comes from `spawn` and stays valid in this copy of memory.
    unsafe {
        // 1. Default disposition for every signal. Rust ignores SIGPIPE and
        //    exec keeps ignored signals ignored, so this must be explicit.
        reset_signal_dispositions();
        // 2. Empty signal mask (the parent blocked everything across fork).
        let mut empty: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut empty);
        libc::sigprocmask(libc::SIG_SETMASK, &empty, std::ptr::null_mut());

        // 3. Park the error pipe and every source fd above all targets, so
        //    the moves below cannot clobber a source that is still needed.
        let error_pipe = libc::fcntl(plan.error_pipe, libc::F_DUPFD_CLOEXEC, plan.park_above);
        if error_pipe < 0 {
            fail(plan.error_pipe);
        }
        if let Some(connection) = plan.stdio {
            if libc::dup2(connection, 0) < 0 || libc::dup2(connection, 1) < 0 {
                fail(error_pipe);
            }
        }
        let count = plan.fds.len();
        for (index, &fd) in plan.fds.iter().enumerate() {
            let copy = libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, plan.park_above);
            if copy < 0 {
                fail(error_pipe);
            }
            *plan.parked.add(index) = copy;
        }
        // 4. Move them down into 3, 4, ...; dup2 clears CLOEXEC on the copy,
        //    which is what makes exactly these fds inheritable.
        for index in 0..count {
            if libc::dup2(*plan.parked.add(index), FIRST_PASSED_FD + index as c_int) < 0 {
                fail(error_pipe);
            }
        }
        // 5. The error pipe goes just above the passed fds (still CLOEXEC,
        //    so exec closes it), and everything above it is closed.
        let first_unused = FIRST_PASSED_FD + count as c_int;
        let error_pipe = if error_pipe != first_unused {
            let moved = libc::dup3(error_pipe, first_unused, libc::O_CLOEXEC);
            if moved < 0 {
                fail(error_pipe);
            }
            moved
        } else {
            error_pipe
        };
        close_from(first_unused + 1);

        // 6. LISTEN_PID: this process's own pid, written into the slot the
        //    parent reserved, so that the program that runs sees its own pid.
        if let Some(digits) = plan.listen_pid_digits {
            write_decimal(digits, libc::getpid() as u32);
        }

        // 7. Run the program. Only returns on failure.
        libc::execve(plan.program, plan.argv, plan.envp);
        fail(error_pipe)
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
    // SAFETY: sigaction(2) with a zeroed (SIG_DFL) action.
    unsafe {
        let mut default_action: libc::sigaction = std::mem::zeroed();
        default_action.sa_sigaction = libc::SIG_DFL;
        for signal in 1..libc::SIGRTMAX() + 1 {
            libc::sigaction(signal, &default_action, std::ptr::null_mut());
        }
    }
}

/// Reports errno to the parent and ends the child: 127 when the program is
/// missing, 126 when it cannot be executed (as shells and tini do).
///
/// # Safety
/// Child side only (see `run_child`).
unsafe fn fail(error_pipe: c_int) -> ! {
    // SAFETY: __errno_location, write and _exit are async-signal-safe;
    // the buffer lives on this stack frame.
    unsafe {
        let errno = *libc::__errno_location();
        let bytes = errno.to_ne_bytes();
        libc::write(error_pipe, bytes.as_ptr().cast(), bytes.len());
        let status = if errno == libc::ENOENT || errno == libc::ENOTDIR {
            crate::error::exit::NOT_FOUND
        } else {
            crate::error::exit::CANNOT_EXECUTE
        };
        libc::_exit(status)
    }
}

/// Closes every fd from `first` up.
///
/// # Safety
/// Child side only (see `run_child`).
unsafe fn close_from(first: c_int) {
    // SAFETY: close_range(2) and close(2) are plain system calls.
    unsafe {
        if libc::syscall(
            libc::SYS_close_range,
            first as libc::c_uint,
            libc::c_uint::MAX,
            0,
        ) == 0
        {
            return;
        }
        // Kernels before 5.9: close one by one up to the fd limit.
        let mut limit: libc::rlimit = std::mem::zeroed();
        let max = if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) == 0 {
            limit.rlim_cur.min(1 << 20) as c_int
        } else {
            4096
        };
        for fd in first..max {
            libc::close(fd);
        }
    }
}

/// Writes `value` in decimal followed by a NUL at `out`, without allocating.
///
/// # Safety
/// `out` must have room for 11 bytes (u32 digits and the NUL).
unsafe fn write_decimal(out: *mut u8, mut value: u32) {
    let mut digits = [0u8; 10];
    let mut len = 0;
    loop {
        digits[len] = b'0' + (value % 10) as u8;
        len += 1;
        value /= 10;
        if value == 0 {
            break;
        }
    }
    for index in 0..len {
        // SAFETY: index < 10 and the caller guarantees 11 bytes at `out`.
        unsafe { *out.add(index) = digits[len - 1 - index] };
    }
    // SAFETY: len <= 10, within the caller's 11 bytes.
    unsafe { *out.add(len) = 0 };
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::ffi::CStr;

    #[test]
    fn decimal_writer_matches_format() {
        for value in [0u32, 7, 10, 4242, 4_194_304, u32::MAX] {
            let mut buffer = [0xffu8; 11];
            // SAFETY: the buffer has the 11 bytes write_decimal needs.
            unsafe { write_decimal(buffer.as_mut_ptr(), value) };
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

    #[test]
    fn environment_drops_what_is_addressed_to_sockhold() {
        let env = inherited_environment();
        for (key, _) in env {
            assert!(!ENV_ADDRESSED_TO_SOCKHOLD.iter().any(|own| key == *own));
        }
    }
}
