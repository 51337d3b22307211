//! What every integration test needs: a sockhold process started on port 0
//! in its own temp dir, its log lines as events to wait on, clients, and
//! cleanup of everything it started (sockhold and every child it logged),
//! so that no test leaves a process behind.
//!
//! Processes are held by pidfds (`Process`), never signalled by a bare pid
//! that may have been reaped and given to an unrelated process since.

use nix::errno::Errno;
use nix::fcntl::{FcntlArg, OFlag, fcntl};
use nix::libc;
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::signal::Signal;
use nix::unistd::Pid;
use std::collections::HashSet;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStderr, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

/// Upper bound for any single wait in a test.
pub const WAIT: Duration = Duration::from_secs(20);

pub fn sockhold_bin() -> &'static str {
    env!("CARGO_BIN_EXE_sockhold")
}

pub fn test_child_bin() -> &'static str {
    env!(
        "CARGO_BIN_EXE_test_child",
        "test_child was not built: it needs the `test-child` feature, which the dev-dependency of Cargo.toml on this package turns on; run `cargo test --features test-child`"
    )
}

/// For the tests marked `#[ignore = "needs root"]`, which `cargo test`
/// reports as ignored and `cargo test -- --ignored` runs: run so without
/// root, they fail at once saying why, rather than halfway.
pub fn needs_root() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "this test needs root: run `cargo test -- --ignored` as root"
    );
}

/// What to say when `program` cannot be started: its name, and for a
/// program that is not installed, which Debian package has it.
pub fn cannot_run(program: &std::ffi::OsStr, error: &std::io::Error) -> String {
    let program = program.to_string_lossy();
    if error.kind() != std::io::ErrorKind::NotFound {
        return format!("cannot run {program}: {error}");
    }
    let name = Path::new(program.as_ref())
        .file_name()
        .map(|name| name.to_string_lossy().into_owned())
        .unwrap_or_default();
    let package = match name.as_str() {
        "systemd-socket-activate" => "systemd",
        "unshare" | "prlimit" => "util-linux",
        "groff" => "groff-base",
        "php-cgi" => "php-cgi",
        "lighttpd" => "lighttpd",
        "ss" => "iproute2",
        "node" => "nodejs",
        other => other,
    };
    format!(
        "cannot run {program}: it is not installed (Debian: apt-get install {package}; .ci/run installs it)"
    )
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
/// when dropped, so that a test never leaves it behind (unless let go).
pub struct Process {
    pid: Pid,
    pidfd: OwnedFd,
    /// Whether dropping it SIGKILLs it (all but those let go).
    kill_on_drop: bool,
}

impl Process {
    /// The process of `child`. Needs no check: a child that nobody has
    /// waited for keeps its pid (as a zombie at worst) until it is reaped.
    pub fn of_child(child: &Child) -> Process {
        let pid = Pid::from_raw(child.id() as i32);
        let pidfd = pidfd_open(pid).expect("pidfd_open a child not yet waited for");
        Process {
            pid,
            pidfd,
            kill_on_drop: true,
        }
    }

    /// `pid`, if it is a child of `parent` (a process we hold).
    pub fn child_of(pid: Pid, parent: Pid) -> Option<Process> {
        Process::open_checked(pid, |pid| parent_of(pid) == Some(parent))
    }

    /// `pid`, if `ancestor` is its parent, grandparent, ...
    pub fn descendant_of(pid: Pid, ancestor: Pid) -> Option<Process> {
        Process::open_checked(pid, |pid| is_descendant(pid, ancestor))
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
        Some(Process {
            pid,
            pidfd,
            kill_on_drop: true,
        })
    }

    /// Closes the pidfd without signalling the process: for one that
    /// turned out not to be the test's after all.
    pub fn let_go(mut self) {
        self.kill_on_drop = false;
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

    /// Whether it has not exited yet: a pidfd polls readable once its
    /// process has exited, zombie or reaped (pidfd_open(2)).
    pub fn is_running(&self) -> bool {
        loop {
            let mut fds = [PollFd::new(self.pidfd.as_fd(), PollFlags::POLLIN)];
            match poll(&mut fds, PollTimeout::ZERO) {
                Ok(ready) => return ready == 0,
                Err(Errno::EINTR) => continue,
                Err(error) => panic!("poll the pidfd of pid {}: {error}", self.pid),
            }
        }
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        // ESRCH if it has exited: nothing else can be hit.
        if self.kill_on_drop {
            let _ = self.signal(Signal::SIGKILL);
        }
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
pub fn parent_of(pid: Pid) -> Option<Pid> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // "PID (COMM) STATE PPID ...": COMM may hold spaces and parentheses,
    // so split after the last ')'.
    let (_, rest) = stat.rsplit_once(')')?;
    let parent = rest.split_whitespace().nth(1)?.parse().ok()?;
    Some(Pid::from_raw(parent))
}

/// Whether `ancestor` is `pid`'s parent, grandparent, ...
fn is_descendant(pid: Pid, ancestor: Pid) -> bool {
    let mut pid = pid;
    // Bounded: a chain of parents ends at pid 0 (or a process gone), and
    // no test builds trees this deep.
    for _ in 0..64 {
        match parent_of(pid) {
            Some(parent) if parent == ancestor => return true,
            Some(parent) if parent.as_raw() > 1 => pid = parent,
            _ => return false,
        }
    }
    false
}

/// A running sockhold, its stderr as a stream of lines.
pub struct Sockhold {
    pub pid: Pid,
    /// sockhold itself, for signals that cannot reach another process.
    process: Process,
    lines: Receiver<String>,
    /// Every line seen so far (the stream is consumed by waits).
    pub log: Arc<Mutex<Vec<String>>>,
    /// What the stderr reader thread says besides lines.
    reader: Arc<ReaderNews>,
    /// Wakes the reader thread to read the pipe empty (`take_lines`).
    wake_reader: OwnedFd,
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

/// What the stderr reader thread tells the test's thread, besides lines.
#[derive(Default)]
struct ReaderNews {
    progress: Mutex<ReaderProgress>,
    /// Notified when `progress` changes.
    progressed: Condvar,
    /// Pairs with `Sockhold::log`: notified on each new line and at EOF.
    log_grew: Condvar,
}

#[derive(Default)]
struct ReaderProgress {
    /// Requests to read the pipe empty, counted so that each waits for its own.
    asked: u64,
    /// The last request for which the reader has read the pipe empty.
    emptied: u64,
    /// Every write end of the pipe is closed and every line taken.
    eof: bool,
}

/// Where the reader thread puts each line of sockhold's stderr.
struct LineSink {
    sockhold: Pid,
    log: Arc<Mutex<Vec<String>>>,
    news: Arc<ReaderNews>,
    lines: Sender<String>,
    child_pids: Arc<Mutex<Vec<Pid>>>,
    children: Arc<Mutex<Vec<Process>>>,
}

impl LineSink {
    fn take(&self, line: String) {
        if let Some(pid) = line.split("started: pid ").nth(1) {
            if let Ok(pid) = pid.trim().parse::<i32>() {
                let pid = Pid::from_raw(pid);
                lock(&self.child_pids).push(pid);
                // Only a pid that is sockhold's child is held: by the time
                // this line is read, the child may have been reaped and its
                // pid reused; and a pid logged inside a PID namespace names
                // another process out here.
                if let Some(child) = Process::child_of(pid, self.sockhold) {
                    lock(&self.children).push(child);
                }
            }
        }
        if std::env::var_os("SOCKHOLD_TEST_ECHO").is_some() {
            eprintln!("[{}] {line}", self.sockhold);
        }
        lock(&self.log).push(line.clone());
        self.news.log_grew.notify_all();
        let _ = self.lines.send(line);
    }

    fn emptied(&self, asked: u64) {
        let mut progress = lock(&self.news.progress);
        if progress.emptied < asked {
            progress.emptied = asked;
            self.news.progressed.notify_all();
        }
    }

    fn eof(&self) {
        lock(&self.news.progress).eof = true;
        self.news.progressed.notify_all();
        // Under the log's lock, so that a waiter that has checked for EOF
        // while holding it is already waiting.
        let _log = lock(&self.log);
        self.news.log_grew.notify_all();
    }
}

/// The stderr reader thread: hands each line to `sink` until EOF, and on
/// each wake-up, reads the pipe empty and says so (`take_lines`).
fn read_stderr(mut stderr: ChildStderr, wake: OwnedFd, sink: LineSink) {
    // Nonblocking, so that "the pipe is empty" can be seen. Our read end
    // is ours alone; sockhold's write end is another open file.
    let flags = fcntl(&stderr, FcntlArg::F_GETFL).expect("F_GETFL");
    let flags = OFlag::from_bits_retain(flags) | OFlag::O_NONBLOCK;
    fcntl(&stderr, FcntlArg::F_SETFL(flags)).expect("F_SETFL");
    let mut pending = Vec::new();
    let mut wake_open = true;
    loop {
        // Empty the wake pipe before reading `asked`: a request made after
        // that read leaves its wake-up byte in the pipe for the next round.
        if wake_open {
            wake_open = empty_wake_pipe(&wake);
        }
        let asked = lock(&sink.news.progress).asked;
        // Everything written before the request is in the pipe now.
        if !read_available(&mut stderr, &mut pending, &sink) {
            if !pending.is_empty() {
                sink.take(String::from_utf8_lossy(&pending).into_owned());
            }
            sink.eof();
            return;
        }
        sink.emptied(asked);
        let mut fds = vec![PollFd::new(stderr.as_fd(), PollFlags::POLLIN)];
        if wake_open {
            fds.push(PollFd::new(wake.as_fd(), PollFlags::POLLIN));
        }
        match poll(&mut fds, PollTimeout::NONE) {
            Ok(_) | Err(Errno::EINTR) => {}
            Err(error) => panic!("poll sockhold's stderr: {error}"),
        }
    }
}

/// Reads what the (nonblocking) wake pipe holds; false once its write end,
/// in `Sockhold`, is closed.
fn empty_wake_pipe(wake: &OwnedFd) -> bool {
    let mut buffer = [0u8; 64];
    loop {
        match nix::unistd::read(wake, &mut buffer) {
            Ok(0) => return false,
            Ok(_) | Err(Errno::EINTR) => {}
            Err(Errno::EAGAIN) => return true,
            Err(_) => return false,
        }
    }
}

/// Reads the (nonblocking) pipe until it is empty, handing each complete
/// line to `sink`. Returns false at EOF (or on a read error, which is as
/// final), true once the pipe is empty.
fn read_available(stderr: &mut ChildStderr, pending: &mut Vec<u8>, sink: &LineSink) -> bool {
    let mut buffer = [0u8; 8192];
    loop {
        match stderr.read(&mut buffer) {
            Ok(0) => return false,
            Ok(read) => {
                pending.extend_from_slice(&buffer[..read]);
                while let Some(end) = pending.iter().position(|&byte| byte == b'\n') {
                    let mut line: Vec<u8> = pending.drain(..=end).collect();
                    line.pop();
                    if line.last() == Some(&b'\r') {
                        line.pop();
                    }
                    sink.take(String::from_utf8_lossy(&line).into_owned());
                }
            }
            Err(error) if error.kind() == std::io::ErrorKind::Interrupted => {}
            Err(error) if error.kind() == std::io::ErrorKind::WouldBlock => return true,
            Err(_) => return false,
        }
    }
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
        // sockhold, or the launcher that execs it.
        let mut child = self
            .command
            .spawn()
            .unwrap_or_else(|error| panic!("{}", cannot_run(self.command.get_program(), &error)));
        // Before the exit thread may reap it.
        let process = Process::of_child(&child);
        let pid = process.pid();
        let stderr = child.stderr.take().unwrap();
        // Close-on-exec, so that no process started meanwhile by another
        // test holds it; nonblocking, so that a wake-up never blocks.
        let (wake, wake_reader) =
            nix::unistd::pipe2(OFlag::O_CLOEXEC | OFlag::O_NONBLOCK).expect("pipe2");
        let (line_tx, lines) = mpsc::channel();
        let log = Arc::new(Mutex::new(Vec::new()));
        let reader = Arc::new(ReaderNews::default());
        let child_pids = Arc::new(Mutex::new(Vec::new()));
        let children = Arc::new(Mutex::new(Vec::new()));
        let sink = LineSink {
            sockhold: pid,
            log: Arc::clone(&log),
            news: Arc::clone(&reader),
            lines: line_tx,
            child_pids: Arc::clone(&child_pids),
            children: Arc::clone(&children),
        };
        std::thread::spawn(move || read_stderr(stderr, wake, sink));
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
            reader,
            wake_reader,
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
        lock(&self.log).join("\n")
    }

    /// The log with every line written to sockhold's stderr before this
    /// call, not only those the reader thread happened to have taken: for
    /// a promise that a line was written before some event the test saw
    /// (a reply, say). Waits up to `WAIT` for the reader.
    pub fn log_written_until_now(&self) -> String {
        assert!(
            self.take_lines(WAIT),
            "the stderr reader did not catch up within {WAIT:?}; log:\n{}",
            self.log_text()
        );
        self.log_text()
    }

    /// Waits until the reader thread has taken every line written to the
    /// pipe before this call: it reads the pipe until it is empty (or at
    /// EOF) and says so. False if that takes longer than `within`.
    fn take_lines(&self, within: Duration) -> bool {
        let asked = {
            let mut progress = lock(&self.reader.progress);
            progress.asked += 1;
            progress.asked
        };
        // A full wake pipe (EAGAIN) already holds a wake-up.
        let _ = nix::unistd::write(&self.wake_reader, &[0]);
        let deadline = Instant::now() + within;
        let mut progress = lock(&self.reader.progress);
        while !progress.eof && progress.emptied < asked {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            progress = self
                .reader
                .progressed
                .wait_timeout(progress, left)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
        true
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
    /// its "listening on KIND ADDRESS" line is in the log. Waits on the log
    /// itself, not on the stream of lines, so takes no line from other waits.
    fn inet_address(&self, kind: &str, index: usize) -> SocketAddr {
        let marker = format!("listening on {kind} ");
        let deadline = Instant::now() + WAIT;
        let mut log = lock(&self.log);
        loop {
            let found: Vec<SocketAddr> = log
                .iter()
                .filter_map(|line| line.split(marker.as_str()).nth(1))
                .filter_map(|rest| rest.split(' ').next()?.parse().ok())
                .collect();
            if let Some(address) = found.get(index) {
                return *address;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() || lock(&self.reader.progress).eof {
                let text = log.join("\n");
                drop(log);
                panic!("no {kind} socket {index} in log:\n{text}");
            }
            log = self
                .reader
                .log_grew
                .wait_timeout(log, left)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
    }

    pub fn signal(&self, signal: Signal) {
        self.process.signal(signal).expect("signal sockhold");
    }

    /// Waits for sockhold to exit, checks its status, and returns its log.
    pub fn exits_with(&mut self, code: i32) -> String {
        let status = self.wait_exit();
        let log = self.log_text();
        assert_eq!(status.code(), Some(code), "exit status; log:\n{log}");
        log
    }

    /// Waits for sockhold to exit and for the reader thread to take the
    /// last lines; returns its status.
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
        // sockhold has exited, so every line it wrote is in the pipe (a
        // write to a full pipe blocks, and a blocked process does not
        // exit), and the reader reads up to EOF, which is there by now
        // unless a process that sockhold left running holds the pipe open
        // too. Waiting for EOF alone could then wait for as long as that
        // process lives; the reader says when it has read the pipe empty,
        // which is as good and comes either way.
        assert!(
            self.take_lines(WAIT),
            "the stderr reader did not catch up within {WAIT:?}; log:\n{}",
            self.log_text()
        );
        status
    }

    pub fn child_pids(&self) -> Vec<Pid> {
        lock(&self.child_pids).clone()
    }

    /// Whether sockhold has not exited yet (asked of its pidfd: its pid
    /// may be another process's once it has been reaped).
    pub fn is_running(&self) -> bool {
        self.process.is_running()
    }

    /// Whether its child `pid` (from a "started: pid" line already taken)
    /// has not exited yet, asked of the pidfd the harness holds it by.
    pub fn child_is_running(&self, pid: Pid) -> bool {
        lock(&self.children)
            .iter()
            .find(|child| child.pid() == pid)
            .unwrap_or_else(|| panic!("pid {pid} is not a child held for this test"))
            .is_running()
    }
}

impl Drop for Sockhold {
    fn drop(&mut self) {
        // Take the "started: pid" lines written so far, while the children
        // they name are still sockhold's and can be verified as such.
        self.take_lines(Duration::from_secs(5));
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

/// One read from a socket, within `within` in all: `read(left)` sets the
/// socket's read timeout to `left` and reads once. A read that fails with
/// EINTR is made again with what is left of the time: with a read timeout
/// (SO_RCVTIMEO) set, recv(2) reports an interruption as EINTR instead of
/// restarting (signal(7)), and the standard library retries that only in
/// its loops (`read_to_end`, `read_exact`, `read_line`), not in a single
/// `read` or `recv`. Past the time, fails with `TimedOut`.
pub fn read_within<T>(
    within: Duration,
    mut read: impl FnMut(Duration) -> std::io::Result<T>,
) -> std::io::Result<T> {
    let deadline = Instant::now() + within;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(std::io::ErrorKind::TimedOut.into());
        }
        match read(left) {
            Err(error) if error.kind() == std::io::ErrorKind::Interrupted => {}
            result => return result,
        }
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

/// Sends `GET / HTTP/1.0`, reads the answer to EOF, and returns it if its
/// status is 200 (so `answer_pid` finds the `pid=` of a body that has one).
pub fn request_http(address: SocketAddr) -> std::io::Result<String> {
    let mut stream = TcpStream::connect_timeout(&address, Duration::from_secs(5))?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    stream.write_all(b"GET / HTTP/1.0\r\nHost: test\r\n\r\n")?;
    let mut answer = String::new();
    stream.read_to_string(&mut answer)?;
    let status = answer.split_whitespace().nth(1);
    if !answer.starts_with("HTTP/") || status != Some("200") {
        return Err(std::io::Error::other(format!("bad answer {answer:?}")));
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

/// Keeps opening new connections with `request` until told to stop;
/// returns (answered, failures, distinct pids).
pub fn hammer<F>(
    stop: Arc<AtomicBool>,
    request: F,
) -> std::thread::JoinHandle<(usize, Vec<String>, HashSet<i32>)>
where
    F: Fn() -> std::io::Result<String> + Send + 'static,
{
    std::thread::spawn(move || {
        let mut answered = 0;
        let mut failures = Vec::new();
        let mut pids = HashSet::new();
        while !stop.load(Ordering::SeqCst) {
            match request() {
                Ok(answer) => {
                    answered += 1;
                    pids.insert(answer_pid(&answer));
                }
                Err(error) => failures.push(error.to_string()),
            }
        }
        (answered, failures, pids)
    })
}

/// Stops a `hammer` and asserts that every connection it made was
/// answered, and at least one; returns the distinct pids that answered.
pub fn stop_hammer(
    stop: &AtomicBool,
    client: std::thread::JoinHandle<(usize, Vec<String>, HashSet<i32>)>,
) -> HashSet<i32> {
    stop.store(true, Ordering::SeqCst);
    let (answered, failures, pids) = client.join().expect("the client thread");
    assert!(
        failures.is_empty(),
        "{} of {} connections failed: {:?}",
        failures.len(),
        answered + failures.len(),
        &failures[..failures.len().min(5)]
    );
    assert!(answered > 0, "no connection was answered");
    pids
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

/// Runs `sockhold ARGS... --control PATH` (a control client) to its end:
/// its exit code, stdout and stderr, trimmed. Bounded: sockhold's own
/// timers bound every answer, and the client's --timeout bounds the rest.
pub fn control_client(args: &[&str], control: &Path) -> (i32, String, String) {
    let output = Command::new(sockhold_bin())
        .args(args)
        .arg("--control")
        .arg(control)
        .stdin(std::process::Stdio::null())
        .output()
        .expect("run the control client");
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).trim().to_string(),
        String::from_utf8_lossy(&output.stderr).trim().to_string(),
    )
}

/// The `state` of each entry of a `status` reply's `workers` array.
pub fn worker_states(status: &str) -> Vec<String> {
    let Some((_, workers)) = status.split_once("\"workers\":[") else {
        panic!("no workers array in {status}");
    };
    workers
        .split("\"state\":\"")
        .skip(1)
        .filter_map(|rest| rest.split_once('"').map(|(state, _)| state.to_string()))
        .collect()
}

/// A Unix datagram socket standing in for systemd's notify socket.
pub struct FakeNotify {
    socket: std::os::unix::net::UnixDatagram,
}

impl FakeNotify {
    pub fn bind(path: &Path) -> FakeNotify {
        let socket = std::os::unix::net::UnixDatagram::bind(path).unwrap();
        FakeNotify { socket }
    }

    /// The next datagram; panics after `WAIT`.
    pub fn next(&self) -> String {
        let mut buffer = [0u8; 4096];
        let length = read_within(WAIT, |left| {
            self.socket.set_read_timeout(Some(left))?;
            self.socket.recv(&mut buffer)
        })
        .expect("a notify message within the wait limit");
        String::from_utf8_lossy(&buffer[..length]).into_owned()
    }
}

/// The `pid` field of a `status` reply.
pub fn status_pid(status: &str) -> i32 {
    let rest = status.split_once("{\"pid\":").expect("a pid").1;
    rest.split(',').next().unwrap().parse().unwrap()
}

/// How many fds process `pid` has open.
pub fn fd_count(pid: impl std::fmt::Display) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .count()
}

/// `text` written at `path`, executable (mode 0755): a script to run.
pub fn write_executable(path: &Path, text: &str) {
    std::fs::write(path, text).unwrap();
    std::fs::set_permissions(path, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
}

/// sockhold on a loopback port (`-l 127.0.0.1:0`, then `args`) with its
/// control socket at `control`, running test_child with `child_args`,
/// generation 1 ready.
pub fn serving_test_child(control: &Path, args: &[&str], child_args: &[&str]) -> Sockhold {
    let sockhold = Sockhold::command()
        .args(["-l", "127.0.0.1:0"])
        .args(args)
        .arg("--control")
        .arg(control)
        .arg("--")
        .arg(test_child_bin())
        .args(child_args)
        .start();
    sockhold.wait_for("generation 1 ready");
    sockhold
}
