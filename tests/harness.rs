//! What every integration test needs: a sockhold process started on port 0
//! in its own temp dir, its log lines as events to wait on, clients, and
//! cleanup of everything it started (sockhold and every child it logged),
//! so that no test leaves a process behind.
//!
//! Processes are held by pidfds (`Process`), never signalled by a bare pid
//! that may have been reaped and given to an unrelated process since.

use nix::errno::Errno;
use nix::libc;
use nix::sys::signal::Signal;
use nix::unistd::Pid;
use std::io::{BufRead, BufReader, Read};
use std::net::{SocketAddr, TcpStream};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

/// Upper bound for any single wait in a test.
pub const WAIT: Duration = Duration::from_secs(20);

pub fn sockhold_bin() -> &'static str {
    env!("CARGO_BIN_EXE_sockhold")
}

pub fn test_child_bin() -> &'static str {
    env!("CARGO_BIN_EXE_test_child")
}

/// Locks `mutex`, also after a panic in another holder: the harness's
/// state stays usable while a failed test unwinds and cleans up.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A fresh directory, removed on drop.
pub struct TempDir(PathBuf);

impl TempDir {
    pub fn new() -> TempDir {
        static COUNTER: AtomicUsize = AtomicUsize::new(0);
        // Short: Unix socket paths are limited to 107 bytes.
        let path = std::env::temp_dir().join(format!(
            "sh{}-{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::SeqCst)
        ));
        std::fs::create_dir_all(&path).unwrap();
        TempDir(path)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }

    pub fn join(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A process held by a pidfd (pidfd_open(2)): a signal sent through it
/// reaches that process, or fails with ESRCH once it has been reaped, never
/// an unrelated process that has since been given the same pid. SIGKILLed
/// when dropped, so that a test never leaves it behind.
pub struct Process {
    pid: Pid,
    pidfd: OwnedFd,
}

impl Process {
    /// The process of `child`. Needs no check: a child that nobody has
    /// waited for keeps its pid (as a zombie at worst) until it is reaped.
    pub fn of_child(child: &Child) -> Process {
        let pid = Pid::from_raw(child.id() as i32);
        let pidfd = pidfd_open(pid).expect("pidfd_open a child not yet waited for");
        Process { pid, pidfd }
    }

    /// `pid`, if it is a child of `parent` (a process we hold).
    pub fn child_of(pid: Pid, parent: Pid) -> Option<Process> {
        Process::open_checked(pid, |pid| parent_of(pid) == Some(parent))
    }

    /// A pidfd for `pid` if `belongs(pid)` holds both before and after it
    /// is opened. The first check avoids even opening a stranger. The
    /// second closes the race of a pid that is reaped and reused between
    /// check and open (the pidfd names whoever held the pid at the open):
    /// if `belongs` still holds, the pidfd names that process, or one that
    /// exited since, which signals through the pidfd cannot reach.
    fn open_checked(pid: Pid, belongs: impl Fn(Pid) -> bool) -> Option<Process> {
        if !belongs(pid) {
            return None;
        }
        let pidfd = pidfd_open(pid).ok()?;
        if !belongs(pid) {
            return None;
        }
        Some(Process { pid, pidfd })
    }

    pub fn pid(&self) -> Pid {
        self.pid
    }

    pub fn signal(&self, signal: Signal) -> nix::Result<()> {
        // SAFETY: pidfd_send_signal(2) on a pidfd we own, with a valid
        // signal number, no siginfo (null: filled in as kill(2) would) and
        // no flags; the kernel reads no memory of ours.
        let result = unsafe {
            libc::syscall(
                libc::SYS_pidfd_send_signal,
                self.pidfd.as_raw_fd(),
                signal as libc::c_int,
                std::ptr::null::<libc::siginfo_t>(),
                0 as libc::c_uint,
            )
        };
        if result == -1 {
            return Err(Errno::last());
        }
        Ok(())
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        // ESRCH if it has exited: nothing else can be hit.
        let _ = self.signal(Signal::SIGKILL);
    }
}

/// pidfd_open(2): an fd (always close-on-exec) naming the process that
/// holds `pid` now.
fn pidfd_open(pid: Pid) -> nix::Result<OwnedFd> {
    // SAFETY: pidfd_open(2) takes a pid and flags (none) and touches no
    // memory of ours.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid.as_raw(), 0 as libc::c_uint) };
    if fd < 0 {
        return Err(Errno::last());
    }
    // SAFETY: pidfd_open just returned this fd; nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

/// The parent of `pid` (field 4 of /proc/PID/stat), if `pid` exists.
fn parent_of(pid: Pid) -> Option<Pid> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // "PID (COMM) STATE PPID ...": COMM may hold spaces and parentheses,
    // so split after the last ')'.
    let (_, rest) = stat.rsplit_once(')')?;
    let parent = rest.split_whitespace().nth(1)?.parse().ok()?;
    Some(Pid::from_raw(parent))
}

/// A running sockhold, its stderr as a stream of lines.
pub struct Sockhold {
    pub pid: Pid,
    /// sockhold itself, for signals that cannot reach another process.
    process: Process,
    lines: Receiver<String>,
    /// Every line seen so far (the stream is consumed by waits).
    pub log: Arc<Mutex<Vec<String>>>,
    exit: Receiver<ExitStatus>,
    exit_status: Option<ExitStatus>,
    /// Child pids read from "generation N started: pid P" lines.
    child_pids: Arc<Mutex<Vec<Pid>>>,
    /// Those of them verified to be sockhold's children, held by pidfds and
    /// SIGKILLed at the end of the test.
    children: Arc<Mutex<Vec<Process>>>,
    /// sockhold's working directory, removed when the test ends.
    _dir: TempDir,
}

pub struct Builder {
    command: Command,
    dir: TempDir,
}

impl Builder {
    pub fn arg(mut self, arg: impl AsRef<std::ffi::OsStr>) -> Builder {
        self.command.arg(arg);
        self
    }

    pub fn args<I, S>(mut self, args: I) -> Builder
    where
        I: IntoIterator<Item = S>,
        S: AsRef<std::ffi::OsStr>,
    {
        self.command.args(args);
        self
    }

    pub fn env(mut self, key: &str, value: impl AsRef<std::ffi::OsStr>) -> Builder {
        self.command.env(key, value);
        self
    }

    /// Runs `hook` in the forked child before exec (e.g. to leak an fd).
    ///
    /// # Safety
    /// As `CommandExt::pre_exec`: the hook must be async-signal-safe.
    pub unsafe fn pre_exec(
        mut self,
        hook: impl FnMut() -> std::io::Result<()> + Send + Sync + 'static,
    ) -> Builder {
        // SAFETY: passed on from the caller's contract.
        unsafe { self.command.pre_exec(hook) };
        self
    }

    pub fn uid(mut self, uid: u32, gid: u32) -> Builder {
        self.command.uid(uid).gid(gid);
        self
    }

    pub fn start(mut self) -> Sockhold {
        self.command
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let mut child = self.command.spawn().expect("start sockhold");
        // Before the exit thread may reap it.
        let process = Process::of_child(&child);
        let pid = process.pid();
        let stderr = child.stderr.take().unwrap();
        let (line_tx, lines) = mpsc::channel();
        let log = Arc::new(Mutex::new(Vec::new()));
        let child_pids = Arc::new(Mutex::new(Vec::new()));
        let children = Arc::new(Mutex::new(Vec::new()));
        {
            let log = Arc::clone(&log);
            let child_pids = Arc::clone(&child_pids);
            let children = Arc::clone(&children);
            std::thread::spawn(move || {
                for line in BufReader::new(stderr).lines() {
                    let Ok(line) = line else { break };
                    if let Some(child) = line.split("started: pid ").nth(1) {
                        if let Ok(child) = child.trim().parse::<i32>() {
                            let child = Pid::from_raw(child);
                            lock(&child_pids).push(child);
                            // Only a pid that is sockhold's child is held: by
                            // the time this line is read, the child may have
                            // been reaped and its pid reused; and a pid logged
                            // inside a PID namespace names another process
                            // out here.
                            if let Some(child) = Process::child_of(child, pid) {
                                lock(&children).push(child);
                            }
                        }
                    }
                    if std::env::var_os("SOCKHOLD_TEST_ECHO").is_some() {
                        eprintln!("[{pid}] {line}");
                    }
                    log.lock().unwrap().push(line.clone());
                    let _ = line_tx.send(line);
                }
            });
        }
        let (exit_tx, exit) = mpsc::channel();
        std::thread::spawn(move || {
            if let Ok(status) = child.wait() {
                let _ = exit_tx.send(status);
            }
        });
        Sockhold {
            pid,
            process,
            lines,
            log,
            exit,
            exit_status: None,
            child_pids,
            children,
            _dir: self.dir,
        }
    }
}

impl Sockhold {
    /// `sockhold` with these arguments, in a new temp dir.
    pub fn command() -> Builder {
        let dir = TempDir::new();
        let mut command = Command::new(sockhold_bin());
        command.current_dir(dir.path());
        Builder { command, dir }
    }

    /// `LAUNCHER... sockhold ARGS...`: sockhold started by a program that
    /// prepares its fds or environment and then execs it in the same
    /// process (systemd-socket-activate, `sh -c '... exec "$0" "$@"'`), so
    /// that the pid is sockhold's. The launcher's stderr is in the log too.
    pub fn launched_by<S: AsRef<std::ffi::OsStr>>(launcher: &[S]) -> Builder {
        let dir = TempDir::new();
        let mut command = Command::new(launcher[0].as_ref());
        command
            .args(&launcher[1..])
            .arg(sockhold_bin())
            .current_dir(dir.path());
        Builder { command, dir }
    }

    /// Waits for a log line containing `needle`; panics with the log so far
    /// if it does not come within `WAIT` or sockhold exits first.
    pub fn wait_for(&self, needle: &str) -> String {
        self.wait_for_within(needle, WAIT).unwrap_or_else(|| {
            panic!(
                "no log line with {needle:?} within {WAIT:?}; log:\n{}",
                self.log_text()
            )
        })
    }

    pub fn wait_for_within(&self, needle: &str, within: Duration) -> Option<String> {
        let deadline = Instant::now() + within;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) if line.contains(needle) => return Some(line),
                Ok(_) => {}
                Err(RecvTimeoutError::Timeout) | Err(RecvTimeoutError::Disconnected) => {
                    return None;
                }
            }
        }
    }

    pub fn log_text(&self) -> String {
        self.log.lock().unwrap().join("\n")
    }

    /// The real address of the n-th TCP socket (from the "listening on" lines).
    pub fn tcp_address(&self, index: usize) -> SocketAddr {
        self.inet_address("tcp", index)
    }

    /// The real address of the n-th UDP socket.
    pub fn udp_address(&self, index: usize) -> SocketAddr {
        self.inet_address("udp", index)
    }

    /// The real address of the n-th socket of `kind` ("tcp", "udp"), once
    /// its "listening on KIND ADDRESS" line is in the log.
    fn inet_address(&self, kind: &str, index: usize) -> SocketAddr {
        let marker = format!("listening on {kind} ");
        let deadline = Instant::now() + WAIT;
        loop {
            let found: Vec<SocketAddr> = self
                .log
                .lock()
                .unwrap()
                .iter()
                .filter_map(|line| line.split(marker.as_str()).nth(1))
                .filter_map(|rest| rest.split(' ').next()?.parse().ok())
                .collect();
            if let Some(address) = found.get(index) {
                return *address;
            }
            assert!(
                Instant::now() < deadline,
                "no {kind} socket {index} in log:\n{}",
                self.log_text()
            );
            self.wait_for_within("listening on", Duration::from_millis(100));
        }
    }

    pub fn signal(&self, signal: Signal) {
        self.process.signal(signal).expect("signal sockhold");
    }

    /// Waits for sockhold to exit and returns its status.
    /// Waits for sockhold to exit, checks its status, and returns its log.
    pub fn exits_with(&mut self, code: i32) -> String {
        let status = self.wait_exit();
        let log = self.log_text();
        assert_eq!(status.code(), Some(code), "exit status; log:\n{log}");
        log
    }

    pub fn wait_exit(&mut self) -> ExitStatus {
        if let Some(status) = self.exit_status {
            return status;
        }
        let status = self.exit.recv_timeout(WAIT).unwrap_or_else(|_| {
            panic!(
                "sockhold did not exit within {WAIT:?}; log:\n{}",
                self.log_text()
            )
        });
        self.exit_status = Some(status);
        // Let the reader thread take the last lines.
        let _ = self.wait_for_within("\u{0}never", Duration::from_millis(50));
        status
    }

    pub fn child_pids(&self) -> Vec<Pid> {
        self.child_pids.lock().unwrap().clone()
    }
}

impl Drop for Sockhold {
    fn drop(&mut self) {
        if self.exit_status.is_none() {
            // Graceful first, so sockhold stops its own children; SIGKILL if
            // it does not exit in time.
            let _ = self.process.signal(Signal::SIGTERM);
            if self.exit.recv_timeout(Duration::from_secs(5)).is_err() {
                let _ = self.process.signal(Signal::SIGKILL);
                let _ = self.exit.recv_timeout(WAIT);
            }
        }
        // Each child is SIGKILLed through its pidfd as it is dropped (a no-op
        // for those that have exited).
        drop(std::mem::take(&mut *lock(&self.children)));
    }
}

/// Whether a process with this pid exists and is not a zombie.
pub fn pid_is_alive(pid: Pid) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .is_some_and(|state| state != "Z" && state != "X"),
        Err(_) => false,
    }
}

/// Connects, reads everything the server says, and returns it.
pub fn request_tcp(address: SocketAddr) -> std::io::Result<String> {
    let mut stream = TcpStream::connect_timeout(&address, Duration::from_secs(5))?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut answer = String::new();
    stream.read_to_string(&mut answer)?;
    if answer.is_empty() {
        return Err(std::io::Error::other("empty answer"));
    }
    Ok(answer)
}

pub fn request_unix(path: &Path) -> std::io::Result<String> {
    let mut stream = UnixStream::connect(path)?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut answer = String::new();
    stream.read_to_string(&mut answer)?;
    if answer.is_empty() {
        return Err(std::io::Error::other("empty answer"));
    }
    Ok(answer)
}

/// The `pid=` field of a test_child answer.
pub fn answer_pid(answer: &str) -> i32 {
    answer
        .split_whitespace()
        .find_map(|field| field.strip_prefix("pid="))
        .and_then(|pid| pid.parse().ok())
        .unwrap_or_else(|| panic!("no pid in answer {answer:?}"))
}

/// Runs sockhold to completion (for commands that must fail at once) and
/// returns its exit code and log.
pub fn run_to_exit(args: &[&str]) -> (i32, String) {
    let mut sockhold = Sockhold::command().args(args).start();
    let status = sockhold.wait_exit();
    (status.code().unwrap_or(-1), sockhold.log_text())
}

/// The `KEY=VALUE` lines of a child's answer (test_child --report).
pub fn report_fields(answer: &str) -> std::collections::HashMap<String, String> {
    answer
        .lines()
        .filter_map(|line| line.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}
