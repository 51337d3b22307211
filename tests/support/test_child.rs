//! `test_child`: a tiny server that the integration tests run under `sockhold`.
//!
//! It takes its listening sockets the way a socket-activated daemon does
//! (`LISTEN_FDS`/`LISTEN_PID`/`LISTEN_FDNAMES`, fds 3..; or Server::Starter's
//! `SERVER_STARTER_PORT`), answers every connection with one line naming its
//! pid (so a test can tell which generation served it), and can misbehave on
//! request: exit at once, boot slowly, ignore SIGTERM, crash later...
//!
//! Usage: `test_child [OPTIONS]`
//!
//! ```text
//! --exit-at-start CODE  exit with CODE right after the LISTEN_PID check
//! --ready-after MS      sleep MS ms, send READY=1 to $NOTIFY_SOCKET, then serve
//! --boot MS             sleep MS ms, then serve, without READY=1 (a server that
//!                       boots slowly and says nothing; before --ready-after's sleep)
//! --never-ready         serve at once, never send READY=1 (the default)
//! --ignore-term         ignore SIGTERM (the supervisor has to SIGKILL us)
//! --term-exit CODE      on SIGTERM, exit with CODE (default: die of SIGTERM)
//! --exit-after MS       after MS ms of serving, exit with --exit-code
//! --exit-code N         status for --exit-after (default 1)
//! --die-by-signal SIG   with --exit-after: raise signal number SIG instead
//! --report              answer with a report of what the supervisor gave us
//! --tag TEXT            add `tag=TEXT` to answers
//! --graceful            on SIGTERM, finish the connection in hand and exit 0
//! --deny-seccomp PROG ARG...  not a server: a launcher that installs a seccomp
//!                       filter failing seccomp(2) with EPERM (as a container's
//!                       strict profile does) and execs PROG; the rest of the
//!                       command line is PROG's
//! --undumpable          first make itself non-dumpable (prctl PR_SET_DUMPABLE 0):
//!                       a process of its user that is not root can no longer read
//!                       its /proc/PID/syscall, fd, ...
//! --log-signals         print `test_child: got SIG...` on USR1/USR2/WINCH/QUIT
//! --log-signal SIG      the same for SIG (a name: ALRM or SIGALRM); repeatable
//! --connection          per-connection mode (sockhold --accept): fd 3 (with
//!                       LISTEN_FDS) or stdin/stdout (without) is the connection
//!                       itself; write the --report to it, with the connection's
//!                       environment (PROTO, TCP*, UNIX*, REMOTE_*), and exit 0
//! ```
//!
//! Plain answer: `pid=<pid>[ tag=<TEXT>] fd=<listening fd>\n`.
//!
//! Exit codes: 2 = bad command line, 3 = bad environment (LISTEN_PID is not
//! ours, no sockets passed), 0 = every listening fd was closed or failed.
//!
//! It has no Rust `main`: `#![no_main]` plus a C `main` skips the std runtime
//! start-up, which would otherwise set SIGPIPE to SIG_IGN and reopen closed
//! fds 0-2 on /dev/null before we could look, hiding exactly what `--report`
//! is meant to show (the fds and signal state the supervisor left us).

#![no_main]
// A test double that inspects its raw process state: unsafe by nature.
#![allow(unsafe_code)]

use std::ffi::{CStr, c_char, c_int};
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicI32, Ordering};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::libc;
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::signal::{SigHandler, SigSet, Signal, raise, signal};
use nix::sys::socket::{
    AddressFamily, MsgFlags, Shutdown, SockFlag, SockType, UnixAddr, accept, recv, send, sendto,
    shutdown, socket,
};

/// Command-line options, see the module doc.
#[derive(Default)]
struct Opts {
    exit_at_start: Option<i32>,
    ready_after: Option<u64>,
    boot: Option<u64>,
    ignore_term: bool,
    term_exit: Option<i32>,
    exit_after: Option<u64>,
    exit_code: Option<i32>,
    die_by_signal: Option<i32>,
    report: bool,
    tag: Option<String>,
    graceful: bool,
    undumpable: bool,
    log_signals: bool,
    /// `--log-signal`: more signals to log, as `--log-signals` does.
    logged_signals: Vec<Signal>,
    connection: bool,
}

/// What the supervisor handed us, captured before we change anything.
struct Snapshot {
    fds: Vec<RawFd>,
    sig_ign: String,
    sig_blk: String,
}

/// Exit status used by the SIGTERM handler (`--term-exit`).
static TERM_EXIT_CODE: AtomicI32 = AtomicI32::new(0);

extern "C" fn on_sigterm(_: c_int) {
    // SAFETY: _exit is async-signal-safe; it skips atexit handlers and flushing.
    unsafe { libc::_exit(TERM_EXIT_CODE.load(Ordering::Relaxed)) }
}

/// Write end of the self-pipe that `--graceful` SIGTERM wakes poll with.
static STOP_PIPE: AtomicI32 = AtomicI32::new(-1);

extern "C" fn on_graceful_term(_: c_int) {
    let fd = STOP_PIPE.load(Ordering::Relaxed);
    // SAFETY: write(2) is async-signal-safe; the pipe stays open for life.
    unsafe { libc::write(fd, b"x".as_ptr().cast(), 1) };
}

extern "C" fn on_logged_signal(number: c_int) {
    // One write(2) of a line assembled on the stack: no allocation, and no
    // interleaving with sockhold's own lines on the shared stderr.
    let mut line = [0u8; 64];
    let mut len = 0;
    let mut put = |bytes: &[u8]| {
        for &byte in bytes {
            if len < line.len() {
                line[len] = byte;
                len += 1;
            }
        }
    };
    put(b"test_child: got ");
    match Signal::try_from(number) {
        Ok(signal) => put(signal.as_str().as_bytes()),
        Err(_) => put(b"another signal"),
    }
    put(b"\n");
    // SAFETY: write(2) is async-signal-safe; `line` holds `len` bytes.
    unsafe { libc::write(2, line.as_ptr().cast(), len) };
}

/// The accept timer's signal (`AcceptTimer`): nothing to do, its only
/// purpose is to interrupt accept(2).
extern "C" fn on_accept_timeout(_: c_int) {}

/// Installs `handler` without SA_RESTART, so that a blocking accept(2) is
/// interrupted and the serve loop sees the stop request at once.
fn install(signal_number: Signal, handler: extern "C" fn(c_int)) {
    let action = nix::sys::signal::SigAction::new(
        SigHandler::Handler(handler),
        nix::sys::signal::SaFlags::empty(),
        SigSet::empty(),
    );
    // SAFETY: the handlers only make async-signal-safe calls.
    unsafe { nix::sys::signal::sigaction(signal_number, &action) }.expect("install handler");
}

/// `--deny-seccomp PROG ARG...`: seccomp(2) fails with EPERM from here on
/// (a classic BPF filter installed with prctl, which the filter leaves
/// alone), then PROG runs. Returns only on failure.
fn deny_seccomp_and_exec(command: &[String]) -> c_int {
    let Some(program) = command.first() else {
        eprintln!("test_child: --deny-seccomp needs a program");
        return 2;
    };
    // struct sock_filter: { u16 code; u8 jt; u8 jf; u32 k }.
    let statement = |code: u16, k: u32| libc::sock_filter {
        code,
        jt: 0,
        jf: 0,
        k,
    };
    let nr_offset = 0; // offsetof(struct seccomp_data, nr)
    let mut filter = [
        statement(
            (libc::BPF_LD | libc::BPF_W | libc::BPF_ABS) as u16,
            nr_offset,
        ),
        libc::sock_filter {
            code: (libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K) as u16,
            jt: 0,
            jf: 1,
            k: libc::SYS_seccomp as u32,
        },
        statement(
            (libc::BPF_RET | libc::BPF_K) as u16,
            libc::SECCOMP_RET_ERRNO | libc::EPERM as u32,
        ),
        statement(
            (libc::BPF_RET | libc::BPF_K) as u16,
            libc::SECCOMP_RET_ALLOW,
        ),
    ];
    let program_filter = libc::sock_fprog {
        len: filter.len() as u16,
        filter: filter.as_mut_ptr(),
    };
    // SAFETY: prctl with integer arguments; changes only this process.
    if unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) } != 0 {
        eprintln!(
            "test_child: no_new_privs: {}",
            std::io::Error::last_os_error()
        );
        return 2;
    }
    // SAFETY: program_filter points at `filter`, alive during the call;
    // the kernel copies the program.
    let installed = unsafe {
        libc::prctl(
            libc::PR_SET_SECCOMP,
            libc::SECCOMP_MODE_FILTER,
            &program_filter as *const libc::sock_fprog,
        )
    };
    if installed != 0 {
        eprintln!(
            "test_child: seccomp filter: {}",
            std::io::Error::last_os_error()
        );
        return 2;
    }
    let error = std::os::unix::process::CommandExt::exec(
        std::process::Command::new(program).args(&command[1..]),
    );
    eprintln!("test_child: cannot run {program}: {error}");
    127
}

/// C entry point (see the module doc for why this is not a Rust `main`).
/// argv is read from here rather than `std::env::args`, which without the
/// std runtime is only filled in on glibc.
#[unsafe(no_mangle)]
extern "C" fn main(argc: c_int, argv: *const *const c_char) -> c_int {
    // First thing: nothing may open an fd or touch a signal before this.
    let snapshot = Snapshot::take();

    // SAFETY: the C runtime passes argc valid pointers in argv.
    let argv = unsafe { std::slice::from_raw_parts(argv, argc.max(0) as usize) };
    let args: Vec<String> = argv
        .iter()
        .skip(1)
        .map(|&arg| {
            // SAFETY: each of them is a valid NUL-terminated string.
            let arg = unsafe { CStr::from_ptr(arg) };
            arg.to_string_lossy().into_owned()
        })
        .collect();
    if args.first().map(String::as_str) == Some("--deny-seccomp") {
        return deny_seccomp_and_exec(&args[1..]);
    }
    let opts = match parse_args(&args) {
        Ok(opts) => opts,
        Err(msg) => {
            eprintln!("test_child: {msg}");
            return 2;
        }
    };

    if opts.undumpable {
        // SAFETY: prctl(PR_SET_DUMPABLE) takes integers and changes only
        // this process's dumpable flag.
        if unsafe { libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0) } != 0 {
            eprintln!("test_child: prctl: {}", std::io::Error::last_os_error());
            return 2;
        }
    }
    let pid = std::process::id();
    check_listen_pid(pid);
    if let Some(code) = opts.exit_at_start {
        return code;
    }

    if opts.ignore_term {
        // SAFETY: a plain disposition change.
        unsafe { signal(Signal::SIGTERM, SigHandler::SigIgn) }.expect("ignore SIGTERM");
    } else if let Some(code) = opts.term_exit {
        TERM_EXIT_CODE.store(code, Ordering::Relaxed);
        // SAFETY: the handler only calls _exit.
        unsafe { signal(Signal::SIGTERM, SigHandler::Handler(on_sigterm)) }
            .expect("install SIGTERM handler");
    }

    let mut stop_read = None;
    if opts.graceful {
        let (read, write) =
            nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC | nix::fcntl::OFlag::O_NONBLOCK)
                .expect("pipe2");
        STOP_PIPE.store(
            std::os::fd::IntoRawFd::into_raw_fd(write),
            Ordering::Relaxed,
        );
        install(Signal::SIGTERM, on_graceful_term);
        stop_read = Some(std::os::fd::IntoRawFd::into_raw_fd(read));
    }
    if opts.log_signals {
        for number in [
            Signal::SIGUSR1,
            Signal::SIGUSR2,
            Signal::SIGWINCH,
            Signal::SIGQUIT,
        ] {
            install(number, on_logged_signal);
        }
    }
    for &number in &opts.logged_signals {
        install(number, on_logged_signal);
    }

    if opts.connection {
        return answer_connection(&snapshot, pid, opts.tag.as_deref());
    }

    let fds = listening_fds();

    if let Some(ms) = opts.boot {
        std::thread::sleep(Duration::from_millis(ms));
    }
    if let Some(ms) = opts.ready_after {
        // Not serving while "booting" lets a test tell a ready child from a booting one.
        std::thread::sleep(Duration::from_millis(ms));
        notify_ready();
    }

    serve(fds, stop_read, &opts, &snapshot, pid)
}

fn parse_args(args: &[String]) -> Result<Opts, String> {
    fn value<T: std::str::FromStr>(
        it: &mut std::slice::Iter<String>,
        name: &str,
    ) -> Result<T, String> {
        let v = it.next().ok_or_else(|| format!("{name} needs a value"))?;
        v.parse().map_err(|_| format!("{name}: bad value {v:?}"))
    }

    let mut opts = Opts::default();
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--exit-at-start" => opts.exit_at_start = Some(value(&mut it, arg)?),
            "--ready-after" => opts.ready_after = Some(value(&mut it, arg)?),
            "--never-ready" => opts.ready_after = None,
            "--boot" => opts.boot = Some(value(&mut it, arg)?),
            "--ignore-term" => opts.ignore_term = true,
            "--term-exit" => opts.term_exit = Some(value(&mut it, arg)?),
            "--exit-after" => opts.exit_after = Some(value(&mut it, arg)?),
            "--exit-code" => opts.exit_code = Some(value(&mut it, arg)?),
            "--die-by-signal" => opts.die_by_signal = Some(value(&mut it, arg)?),
            "--report" => opts.report = true,
            "--tag" => opts.tag = Some(value(&mut it, arg)?),
            "--graceful" => opts.graceful = true,
            "--undumpable" => opts.undumpable = true,
            "--log-signals" => opts.log_signals = true,
            "--log-signal" => {
                let name: String = value(&mut it, arg)?;
                let upper = name.to_ascii_uppercase();
                let full = if upper.starts_with("SIG") {
                    upper
                } else {
                    format!("SIG{upper}")
                };
                let signal = full
                    .parse::<Signal>()
                    .map_err(|_| format!("--log-signal: unknown signal {name:?}"))?;
                opts.logged_signals.push(signal);
            }
            "--connection" => opts.connection = true,
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    if opts.ignore_term && opts.term_exit.is_some() {
        return Err("--ignore-term and --term-exit exclude each other".into());
    }
    if opts.exit_after.is_none() && (opts.exit_code.is_some() || opts.die_by_signal.is_some()) {
        return Err("--exit-code and --die-by-signal need --exit-after".into());
    }
    if let Some(sig) = opts.die_by_signal {
        Signal::try_from(sig).map_err(|_| format!("--die-by-signal: bad signal {sig}"))?;
    }
    Ok(opts)
}

impl Snapshot {
    fn take() -> Snapshot {
        // fds first: reading /proc/self/status below opens (and closes) one more.
        let fds = open_fds();
        let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
        let field = |name: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .map_or_else(|| "?".to_string(), |v| v.trim().to_string())
        };
        Snapshot {
            fds,
            sig_ign: field("SigIgn:"),
            sig_blk: field("SigBlk:"),
        }
    }
}

/// Sorted fds open in this process, without the one used to list them.
fn open_fds() -> Vec<RawFd> {
    // collect() consumes the ReadDir, so its own fd is closed once this returns.
    let mut fds: Vec<RawFd> = match std::fs::read_dir("/proc/self/fd") {
        Ok(dir) => dir
            .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
            .collect(),
        Err(_) => Vec::new(),
    };
    // The directory's fd was in the listing but is closed now: keep only fds still open.
    // SAFETY: F_GETFD only queries the descriptor.
    fds.retain(|&fd| unsafe { libc::fcntl(fd, libc::F_GETFD) } != -1);
    fds.sort_unstable();
    fds
}

/// Exit 3 unless LISTEN_PID (when set, or required by LISTEN_FDS) is our pid.
fn check_listen_pid(pid: u32) {
    let listen_pid = std::env::var("LISTEN_PID").ok();
    if listen_pid.is_none() && std::env::var_os("LISTEN_FDS").is_none() {
        return; // Server::Starter mode: no LISTEN_PID to check.
    }
    if listen_pid.as_deref() != Some(pid.to_string().as_str()) {
        let shown = listen_pid.unwrap_or_else(|| "UNSET".into());
        eprintln!("test_child: LISTEN_PID={shown} but my pid is {pid}");
        std::process::exit(3);
    }
}

/// Listening fds from LISTEN_FDS, else from SERVER_STARTER_PORT; exit 3 if neither.
fn listening_fds() -> Vec<RawFd> {
    let fail = |msg: String| -> ! {
        eprintln!("test_child: {msg}");
        std::process::exit(3)
    };
    if let Ok(n) = std::env::var("LISTEN_FDS") {
        let n: RawFd = n
            .parse()
            .unwrap_or_else(|_| fail(format!("bad LISTEN_FDS={n:?}")));
        return (3..3 + n).collect();
    }
    if let Ok(spec) = std::env::var("SERVER_STARTER_PORT") {
        // "host:port=fd;path=fd;..." -- the fd is after the last '='.
        return spec
            .split(';')
            .filter(|entry| !entry.is_empty())
            .map(|entry| {
                entry
                    .rsplit_once('=')
                    .and_then(|(_, fd)| fd.parse().ok())
                    .unwrap_or_else(|| fail(format!("bad SERVER_STARTER_PORT entry {entry:?}")))
            })
            .collect();
    }
    fail("neither LISTEN_FDS nor SERVER_STARTER_PORT is set".into())
}

/// Send READY=1 to $NOTIFY_SOCKET; problems are reported but not fatal.
fn notify_ready() {
    let Ok(path) = std::env::var("NOTIFY_SOCKET") else {
        eprintln!("test_child: --ready-after but NOTIFY_SOCKET is not set");
        return;
    };
    let result = (|| {
        let addr = match path.strip_prefix('@') {
            Some(name) => UnixAddr::new_abstract(name.as_bytes())?,
            None => UnixAddr::new(path.as_str())?,
        };
        let sock = socket(
            AddressFamily::Unix,
            SockType::Datagram,
            SockFlag::SOCK_CLOEXEC,
            None,
        )?;
        sendto(sock.as_raw_fd(), b"READY=1", &addr, MsgFlags::empty())
    })();
    if let Err(e) = result {
        eprintln!("test_child: sending READY=1 to {path}: {e}");
    }
}

/// How long an accept(2) on a listener that poll(2) found readable may
/// block before it is given up: a pending connection is taken at once, so
/// only a lost race (another holder of the listener took it) gets this far.
const ACCEPT_GIVE_UP: Duration = Duration::from_millis(50);

/// A one-shot timer signal that interrupts a blocking accept(2).
///
/// The listeners are shared with sockhold and with every other generation,
/// and are blocking (O_NONBLOCK belongs to the open file, which every holder
/// shares, so it must not be set). When poll(2) says a listener is readable,
/// another holder may take the connection first, and a plain accept(2)
/// would then block on that listener until the next connection to it,
/// serving none of the others meanwhile. Armed around each accept, the
/// timer's signal (its handler installed without SA_RESTART) makes accept
/// fail with EINTR, and the loop goes back to poll(2). SO_RCVTIMEO would do
/// it too, but it is a property of the socket, shared with every holder.
struct AcceptTimer(libc::timer_t);

/// The accept timer's signal: a real-time one, which sockhold never passes
/// on, so that the signals a test sends (SIGALRM among them) keep their
/// meaning.
fn accept_timer_signal() -> c_int {
    libc::SIGRTMIN() + 4
}

impl AcceptTimer {
    fn new() -> AcceptTimer {
        let signal = accept_timer_signal();
        // SAFETY: an all-zero sigaction is a valid value (SIG_DFL, no flags).
        let mut action: libc::sigaction = unsafe { std::mem::zeroed() };
        action.sa_sigaction = on_accept_timeout as extern "C" fn(c_int) as usize;
        // No SA_RESTART: the point is to interrupt accept(2).
        // SAFETY: a valid action whose handler does nothing.
        let installed = unsafe { libc::sigaction(signal, &action, std::ptr::null_mut()) };
        assert_eq!(installed, 0, "install the accept timer's handler");
        // SAFETY: an all-zero sigevent is a valid value; the fields that
        // matter are set below.
        let mut event: libc::sigevent = unsafe { std::mem::zeroed() };
        event.sigev_notify = libc::SIGEV_SIGNAL;
        event.sigev_signo = signal;
        let mut timer: libc::timer_t = std::ptr::null_mut();
        // SAFETY: timer_create writes the new timer's id into `timer`.
        let created = unsafe { libc::timer_create(libc::CLOCK_MONOTONIC, &mut event, &mut timer) };
        assert_eq!(created, 0, "timer_create");
        AcceptTimer(timer)
    }

    /// accept(2) on `listener`, given up (EINTR) after `ACCEPT_GIVE_UP`.
    fn accept(&mut self, listener: RawFd) -> nix::Result<RawFd> {
        self.set(ACCEPT_GIVE_UP);
        let result = accept(listener);
        // Disarmed before anything else runs: nothing after the accept may
        // be interrupted by it. (An expiry that raced the accept has already
        // delivered its signal by the time this returns.)
        self.set(Duration::ZERO);
        result
    }

    /// Arms the timer to fire once after `after`; zero disarms it.
    fn set(&mut self, after: Duration) {
        let spec = libc::itimerspec {
            it_interval: libc::timespec {
                tv_sec: 0,
                tv_nsec: 0,
            },
            it_value: libc::timespec {
                tv_sec: after.as_secs() as libc::time_t,
                tv_nsec: after.subsec_nanos() as libc::c_long,
            },
        };
        // SAFETY: a timer made by timer_create, a valid itimerspec, and no
        // old value asked for.
        let set = unsafe { libc::timer_settime(self.0, 0, &spec, std::ptr::null_mut()) };
        assert_eq!(set, 0, "timer_settime");
    }
}

/// Accept loop over all listening fds; returns the exit status.
fn serve(
    mut fds: Vec<RawFd>,
    stop_read: Option<RawFd>,
    opts: &Opts,
    snapshot: &Snapshot,
    pid: u32,
) -> c_int {
    let had_fds = !fds.is_empty();
    let mut timer = AcceptTimer::new();
    let deadline = opts
        .exit_after
        .map(|ms| Instant::now() + Duration::from_millis(ms));
    loop {
        if had_fds && fds.is_empty() {
            return 0; // every listening fd is gone
        }
        let timeout = match deadline {
            None => PollTimeout::NONE,
            Some(deadline) => {
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    return exit_now(opts);
                }
                // Round up so we do not spin on a sub-millisecond remainder.
                PollTimeout::try_from(left.as_millis() + 1).unwrap_or(PollTimeout::MAX)
            }
        };

        let revents: Vec<PollFlags> = {
            let mut pfds: Vec<PollFd> = fds
                .iter()
                .chain(stop_read.iter())
                // SAFETY: the fds stay open for this scope (we never close them).
                .map(|&fd| PollFd::new(unsafe { BorrowedFd::borrow_raw(fd) }, PollFlags::POLLIN))
                .collect();
            match poll(&mut pfds, timeout) {
                Ok(_) => {}
                Err(Errno::EINTR) => continue,
                Err(e) => {
                    eprintln!("test_child: poll: {e}");
                    return 1;
                }
            }
            pfds.iter()
                .map(|p| p.revents().unwrap_or(PollFlags::empty()))
                .collect()
        };
        if stop_read.is_some() && revents[fds.len()].contains(PollFlags::POLLIN) {
            return 0; // graceful SIGTERM: nothing in hand
        }

        let mut dead = Vec::new();
        for (&fd, rev) in fds.iter().zip(revents) {
            if rev.intersects(PollFlags::POLLNVAL | PollFlags::POLLERR) {
                dead.push(fd);
            } else if rev.contains(PollFlags::POLLIN) {
                if !handle_one(fd, &mut timer, opts, snapshot, pid) {
                    dead.push(fd);
                }
            } else if rev.contains(PollFlags::POLLHUP) {
                dead.push(fd);
            }
        }
        fds.retain(|fd| !dead.contains(fd));
    }
}

/// Accept and answer one connection on `listener`, which poll(2) found
/// readable. Returns false if the listening fd itself is unusable.
fn handle_one(
    listener: RawFd,
    timer: &mut AcceptTimer,
    opts: &Opts,
    snapshot: &Snapshot,
    pid: u32,
) -> bool {
    let conn = match timer.accept(listener) {
        // SAFETY: accept just gave us this fd; OwnedFd closes it on drop.
        Ok(fd) => unsafe { OwnedFd::from_raw_fd(fd) },
        // Another holder of the listener took the connection (the accept
        // timer's EINTR), a signal came (a --graceful SIGTERM), or a
        // per-connection failure: back to poll, keep serving.
        Err(Errno::EAGAIN | Errno::EINTR | Errno::ECONNABORTED | Errno::EPROTO) => return true,
        Err(Errno::EMFILE | Errno::ENFILE | Errno::ENOBUFS | Errno::ENOMEM) => return true,
        Err(e) => {
            eprintln!("test_child: accept on fd {listener}: {e}");
            return false;
        }
    };
    let c = conn.as_raw_fd();

    // Swallow whatever the client already sent: closing with unread data makes the
    // kernel send RST, which can destroy our answer before the client reads it.
    let mut buf = [0u8; 4096];
    while matches!(recv(c, &mut buf, MsgFlags::MSG_DONTWAIT), Ok(n) if n > 0) {}

    let answer = if opts.report {
        report(snapshot, pid, opts.tag.as_deref())
    } else {
        let tag = opts
            .tag
            .as_ref()
            .map(|t| format!(" tag={t}"))
            .unwrap_or_default();
        format!("pid={pid}{tag} fd={listener}\n")
    };

    // MSG_NOSIGNAL: a vanished client must not kill us with SIGPIPE. Errors
    // (EPIPE, ECONNRESET, ...) only end this connection.
    let mut rest = answer.as_bytes();
    while !rest.is_empty() {
        match send(c, rest, MsgFlags::MSG_NOSIGNAL) {
            Ok(n) => rest = &rest[n..],
            Err(Errno::EINTR) => {}
            Err(_) => break,
        }
    }
    let _ = shutdown(c, Shutdown::Write);
    true
}

fn report(snapshot: &Snapshot, pid: u32, tag: Option<&str>) -> String {
    let env = |name: &str| std::env::var(name).unwrap_or_else(|_| "UNSET".into());
    let fds: Vec<String> = snapshot.fds.iter().map(|fd| fd.to_string()).collect();
    let mut out = format!("pid={pid}\n");
    if let Some(tag) = tag {
        out += &format!("tag={tag}\n");
    }
    out += &format!("fds={}\n", fds.join(" "));
    for name in [
        "LISTEN_FDS",
        "LISTEN_PID",
        "LISTEN_FDNAMES",
        "NOTIFY_SOCKET",
    ] {
        out += &format!("{name}={}\n", env(name));
    }
    // Set only with sockhold --workers: shown only when set, so that the
    // report is otherwise what it always was.
    for name in ["SOCKHOLD_WORKER", "SOCKHOLD_GENERATION"] {
        if let Ok(value) = std::env::var(name) {
            out += &format!("{name}={value}\n");
        }
    }
    out += &format!("SigIgn={}\nSigBlk={}\n", snapshot.sig_ign, snapshot.sig_blk);
    out += &format!("pgid={}\n", nix::unistd::getpgrp());
    out
}

/// `--connection`: the report, plus the connection's environment, written
/// to the connection we were given.
fn answer_connection(snapshot: &Snapshot, pid: u32, tag: Option<&str>) -> c_int {
    let fd: RawFd = if std::env::var_os("LISTEN_FDS").is_some() {
        3
    } else {
        1
    };
    let mut answer = report(snapshot, pid, tag);
    for name in [
        "PROTO",
        "TCPREMOTEIP",
        "TCPREMOTEPORT",
        "TCPLOCALIP",
        "TCPLOCALPORT",
        "REMOTE_ADDR",
        "REMOTE_PORT",
        "UNIXREMOTEUID",
        "UNIXREMOTEGID",
        "UNIXREMOTEPID",
    ] {
        let value = std::env::var(name).unwrap_or_else(|_| "UNSET".into());
        answer += &format!("{name}={value}\n");
    }
    let mut rest = answer.as_bytes();
    while !rest.is_empty() {
        match send(fd, rest, MsgFlags::MSG_NOSIGNAL) {
            Ok(n) => rest = &rest[n..],
            Err(Errno::EINTR) => {}
            Err(e) => {
                eprintln!("test_child: writing to the connection on fd {fd}: {e}");
                return 1;
            }
        }
    }
    let _ = shutdown(fd, Shutdown::Write);
    0
}

/// End of `--exit-after`: exit with --exit-code, or die of --die-by-signal.
fn exit_now(opts: &Opts) -> c_int {
    if let Some(sig) = opts.die_by_signal.and_then(|s| Signal::try_from(s).ok()) {
        // Make sure the signal is neither ignored (e.g. --ignore-term) nor blocked.
        // SAFETY: restoring the default disposition.
        let _ = unsafe { signal(sig, SigHandler::SigDfl) };
        let mut set = SigSet::empty();
        set.add(sig);
        let _ = set.thread_unblock();
        let _ = raise(sig);
        // Still alive: the signal's default action is not fatal (e.g. SIGCHLD).
        eprintln!("test_child: survived signal {sig}");
    }
    opts.exit_code.unwrap_or(1)
}
