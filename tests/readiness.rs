//! Observed readiness, `--ready accepting` and the default (`auto`), with
//! real, unmodified servers as the children: a generation is ready once
//! sockhold sees it waiting for connections on the held socket, not when
//! it has merely started, nor on an early READY=1; and where sockhold
//! cannot see, it says so and falls back.
//!
//! The servers (`tests/support/servers/`: Python's standard library, and
//! gunicorn) take the socket at fd 3 the systemd way, boot for
//! `$SERVER_BOOT_SECONDS`, and append "PID MONOTONIC" to
//! `$SERVER_SINCE_FILE` just before they start serving: CLOCK_MONOTONIC,
//! the clock this test reads when it sees a "ready" line.

use crate::harness::*;
use nix::libc;
use nix::sys::signal::Signal;
use nix::time::{ClockId, clock_gettime};
use nix::unistd::Pid;
use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// How long every server boots before it serves: longer than the 1 s that
/// sockhold waits where it can observe nothing, so that readiness by that
/// delay shows.
const BOOT: Duration = Duration::from_millis(1500);

fn servers_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/support/servers")
}

fn server(script: &str) -> String {
    servers_dir().join(script).to_str().unwrap().to_string()
}

/// CLOCK_MONOTONIC in seconds: Python's `time.monotonic()`.
fn monotonic_now() -> f64 {
    let now = clock_gettime(ClockId::CLOCK_MONOTONIC).expect("clock_gettime");
    now.tv_sec() as f64 + now.tv_nsec() as f64 * 1e-9
}

/// Whether `program` is an executable file in a directory of $PATH.
fn on_path(program: &str) -> bool {
    std::env::var_os("PATH").is_some_and(|path| {
        std::env::split_paths(&path).any(|dir| {
            std::fs::metadata(dir.join(program))
                .is_ok_and(|meta| meta.is_file() && meta.permissions().mode() & 0o111 != 0)
        })
    })
}

/// The time at which `pid` wrote that it starts serving, if it has.
fn serving_since(file: &Path, pid: Pid) -> Option<f64> {
    let text = std::fs::read_to_string(file).ok()?;
    text.lines().find_map(|line| {
        let (who, when) = line.split_once(' ')?;
        (who == pid.to_string()).then(|| when.trim().parse().ok())?
    })
}

/// The real servers.
#[derive(Clone, Copy, PartialEq, Debug)]
enum Kind {
    /// asyncio.start_server: epoll.
    Asyncio,
    /// http.server's ThreadingHTTPServer (socketserver): poll.
    HttpServer,
    /// A blocking accept loop.
    Blocking,
    /// A blocking accept loop in a thread other than the main one.
    Threaded,
    /// gunicorn's sync worker (select), whose app takes 1.5 s to import,
    /// while its arbiter sends READY=1 as soon as it has booted.
    Gunicorn,
    /// Node.js, `listen({fd: 3})`: libuv's epoll loop.
    Node,
}

/// The syscalls a thread waits in for a connection.
#[derive(Clone, Copy, PartialEq, Debug)]
enum Wait {
    Accept,
    Epoll,
    PollOrSelect,
}

impl Kind {
    fn command(self) -> Vec<String> {
        let python = |script| vec!["python3".to_string(), server(script)];
        match self {
            Kind::Asyncio => python("asyncio_server.py"),
            Kind::HttpServer => python("http_server.py"),
            Kind::Blocking => python("blocking_server.py"),
            Kind::Threaded => python("threaded_server.py"),
            // No --bind: gunicorn takes the sockets of LISTEN_FDS itself when
            // LISTEN_PID is its pid (gunicorn/systemd.py).
            Kind::Gunicorn => ["gunicorn", "--workers", "1", "--chdir"]
                .into_iter()
                .map(String::from)
                .chain([servers_dir().to_str().unwrap().to_string()])
                .chain(["gunicorn_app:app".to_string()])
                .collect(),
            Kind::Node => vec!["node".to_string(), server("node_server.js")],
        }
    }

    fn request(self, address: SocketAddr) -> std::io::Result<String> {
        match self {
            Kind::HttpServer | Kind::Gunicorn => request_http(address),
            _ => request_tcp(address),
        }
    }

    fn waits_in(self) -> Wait {
        match self {
            Kind::Asyncio | Kind::Node => Wait::Epoll,
            Kind::HttpServer | Kind::Gunicorn => Wait::PollOrSelect,
            Kind::Blocking | Kind::Threaded => Wait::Accept,
        }
    }

    /// Whether the process that accepts is a child of the generation's
    /// process (gunicorn's worker) rather than that process itself.
    fn accepts_in_a_child(self) -> bool {
        self == Kind::Gunicorn
    }

    /// Why this kind cannot be tested here, if it cannot.
    fn missing(self) -> Option<&'static str> {
        match self {
            Kind::Gunicorn if !on_path("gunicorn") => {
                Some("gunicorn is not installed (apt-get install gunicorn)")
            }
            Kind::Node if !on_path("node") => {
                Some("node is not installed (apt-get install nodejs)")
            }
            _ => None,
        }
    }
}

#[derive(Clone, Copy, PartialEq, Debug)]
enum Mode {
    Accepting,
    /// No --ready: auto.
    Default,
}

impl Mode {
    fn args(self) -> &'static [&'static str] {
        match self {
            Mode::Accepting => &["--ready", "accepting"],
            Mode::Default => &[],
        }
    }
}

/// The syscall number's name, for those that wait for connections.
fn syscall_name(number: libc::c_long) -> Option<&'static str> {
    let mut names: Vec<(libc::c_long, &'static str)> = vec![
        (libc::SYS_accept4, "accept4"),
        (libc::SYS_epoll_pwait, "epoll_pwait"),
        (libc::SYS_ppoll, "ppoll"),
        (libc::SYS_pselect6, "pselect6"),
    ];
    #[cfg(target_arch = "x86_64")]
    names.extend([
        (libc::SYS_accept, "accept"),
        (libc::SYS_epoll_wait, "epoll_wait"),
        (libc::SYS_epoll_pwait2, "epoll_pwait2"),
        (libc::SYS_poll, "poll"),
        (libc::SYS_select, "select"),
    ]);
    names
        .into_iter()
        .find(|(known, _)| *known == number)
        .map(|(_, name)| name)
}

fn wait_of(syscall: &str) -> Option<Wait> {
    match syscall {
        "accept" | "accept4" => Some(Wait::Accept),
        "epoll_wait" | "epoll_pwait" | "epoll_pwait2" => Some(Wait::Epoll),
        "poll" | "ppoll" | "select" | "pselect6" => Some(Wait::PollOrSelect),
        _ => None,
    }
}

/// Each thread of `pid` and what /proc/PID/task/TID/syscall says it is in:
/// a syscall number, "running", or -1 (blocked outside a syscall).
fn threads_in(pid: Pid) -> Vec<(Pid, String)> {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return Vec::new();
    };
    tasks
        .filter_map(|task| {
            let task = task.ok()?;
            let tid: i32 = task.file_name().to_str()?.parse().ok()?;
            let syscall = std::fs::read_to_string(task.path().join("syscall")).ok()?;
            let first = syscall.split_whitespace().next()?.to_string();
            Some((Pid::from_raw(tid), first))
        })
        .collect()
}

/// Waits until a thread of `pid` is blocked in a syscall of `kind`'s
/// family (in a thread other than the main one for `Threaded`); returns
/// the syscall's name. Polls /proc, as sockhold does: there is no event to
/// wait on. The thread is there as soon as sockhold has seen it; a server
/// that wakes up now and then (poll timeouts, gunicorn's heartbeat) is
/// back in it within a second.
fn wait_blocked_in(pid: Pid, kind: Kind) -> &'static str {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let threads = threads_in(pid);
        let found = threads.iter().find_map(|(tid, first)| {
            let name = syscall_name(first.parse().ok()?)?;
            let off_main = *tid != pid;
            (wait_of(name) == Some(kind.waits_in()) && off_main == (kind == Kind::Threaded))
                .then_some(name)
        });
        if let Some(name) = found {
            if kind == Kind::Threaded {
                let main = threads.iter().find(|(tid, _)| *tid == pid);
                let main_in = main.and_then(|(_, first)| syscall_name(first.parse().ok()?));
                assert!(
                    main_in.and_then(wait_of) != Some(Wait::Accept),
                    "the main thread of {pid} accepts too: {threads:?}"
                );
            }
            return name;
        }
        assert!(
            Instant::now() < deadline,
            "no thread of pid {pid} blocked in {:?} within 5s: {threads:?}",
            kind.waits_in()
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// The inode of the TCP socket listening on `port` (/proc/net/tcp, state
/// 0A = LISTEN): the socket sockhold holds, in whichever process.
fn listening_inode(port: u16) -> u64 {
    let table = std::fs::read_to_string("/proc/net/tcp").expect("read /proc/net/tcp");
    let port = format!("{port:04X}");
    table
        .lines()
        .skip(1)
        .find_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let local_port = fields.get(1)?.rsplit(':').next()?;
            (local_port == port && *fields.get(3)? == "0A").then(|| fields.get(9)?.parse().ok())?
        })
        .unwrap_or_else(|| panic!("no socket listening on port {port} (hex) in /proc/net/tcp"))
}

/// The inode of the socket at `fd` of `pid`, from its "socket:[INODE]" link.
fn socket_inode(pid: Pid, fd: i32) -> Option<u64> {
    let link = std::fs::read_link(format!("/proc/{pid}/fd/{fd}")).ok()?;
    let link = link.to_str()?;
    link.strip_prefix("socket:[")?
        .strip_suffix(']')?
        .parse()
        .ok()
}

/// The fd in an "accepting on fd N" of a log line.
fn fd_in(line: &str) -> i32 {
    line.split("accepting on fd ")
        .nth(1)
        .and_then(|rest| rest.split(' ').next())
        .and_then(|fd| fd.parse().ok())
        .unwrap_or_else(|| panic!("no 'accepting on fd N' in {line:?}"))
}

/// The pid in a "(pid P)" of a log line.
fn pid_in(line: &str) -> Pid {
    let pid = line
        .split("(pid ")
        .nth(1)
        .and_then(|rest| rest.split(')').next())
        .and_then(|pid| pid.parse().ok())
        .unwrap_or_else(|| panic!("no (pid P) in {line:?}"));
    Pid::from_raw(pid)
}

/// The pid at the end of a "started: pid P" line.
fn started_pid(line: &str) -> Pid {
    let pid = line
        .rsplit("pid ")
        .next()
        .and_then(|pid| pid.trim().parse().ok())
        .unwrap_or_else(|| panic!("no pid in {line:?}"));
    Pid::from_raw(pid)
}

/// The DURATION of the first "after DURATION" of a log line: "70ms",
/// "2.98s", "1s".
fn after_in(line: &str) -> Duration {
    let text = line
        .split(" after ")
        .nth(1)
        .and_then(|rest| rest.split([' ', ';', ',', '(']).next())
        .unwrap_or_else(|| panic!("no 'after DURATION' in {line:?}"));
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or_else(|| panic!("no unit in {text:?} of {line:?}"));
    let (number, unit) = text.split_at(split);
    let number: f64 = number
        .parse()
        .unwrap_or_else(|_| panic!("bad number in {line:?}"));
    let seconds = match unit {
        "s" => number,
        "ms" => number / 1e3,
        "µs" | "us" => number / 1e6,
        "ns" => number / 1e9,
        _ => panic!("unknown unit {unit:?} in {line:?}"),
    };
    Duration::from_secs_f64(seconds)
}

/// sockhold on 127.0.0.1:0 in `mode`, running `kind` with the usual boot
/// time, writing to `since`.
fn start(kind: Kind, mode: Mode, since: &Path) -> Sockhold {
    Sockhold::command()
        .env("SERVER_SINCE_FILE", since)
        .env("SERVER_BOOT_SECONDS", format!("{}", BOOT.as_secs_f64()))
        .args(["-l", "127.0.0.1:0"])
        .args(mode.args())
        .arg("--")
        .args(kind.command())
        .start()
}

/// Waits for generation `generation` to start and to be ready, and checks
/// that it was made ready by being seen accepting, no sooner than its boot
/// time after its start, and after it had written that it serves. Returns
/// the pid that accepts.
fn expect_ready_once_serving(
    sockhold: &Sockhold,
    generation: u32,
    kind: Kind,
    mode: Mode,
    since: &Path,
) -> Pid {
    let started = sockhold.wait_for(&format!("generation {generation} started: pid "));
    let child = started_pid(&started);
    if kind == Kind::Gunicorn && mode == Mode::Default {
        // gunicorn's arbiter says READY=1 before any worker has the app.
        let sent = sockhold.wait_for(&format!("generation {generation} sent READY=1 after "));
        assert!(
            sent.contains("; ready once seen accepting"),
            "{sent}\nlog:\n{}",
            sockhold.log_text()
        );
    }
    let line = sockhold.wait_for(&format!("generation {generation} ready"));
    let seen = monotonic_now();
    let log = sockhold.log_text();
    assert!(
        line.contains(&format!("generation {generation} ready: accepting on fd ")),
        "not made ready by being seen accepting: {line}\nlog:\n{log}"
    );
    let accepting = pid_in(&line);
    // The fd is the accepting process's own (gunicorn's worker has a dup
    // of fd 3): it must be the held socket.
    let fd = fd_in(&line);
    assert_eq!(
        socket_inode(accepting, fd),
        Some(listening_inode(sockhold.tcp_address(0).port())),
        "fd {fd} of pid {accepting} is not the held socket: {line}\nlog:\n{log}"
    );
    if kind.accepts_in_a_child() {
        assert_eq!(
            parent_of(accepting),
            Some(child),
            "the accepting pid is not a child of generation {generation}'s process: {line}\nlog:\n{log}"
        );
    } else {
        assert_eq!(accepting, child, "{line}\nlog:\n{log}");
    }
    let after = after_in(&line);
    assert!(
        after >= BOOT,
        "ready after {after:?}, before the server's {BOOT:?} boot was over: {line}\nlog:\n{log}"
    );
    let served_from = serving_since(since, accepting).unwrap_or_else(|| {
        panic!("pid {accepting} had not started serving when sockhold said it was ready: {line}\nlog:\n{log}")
    });
    assert!(
        served_from < seen,
        "pid {accepting} started serving at {served_from}, after the ready line was seen at {seen}"
    );
    accepting
}

/// The promise for each real server in each mode: generation 1 is ready
/// once it serves (seen waiting in the syscall its kind waits in), and two
/// reloads under a stream of new connections each switch only once the new
/// generation serves, with no failed connection.
fn ready_once_serving_and_reloads_without_a_failed_connection(kind: Kind, mode: Mode) {
    // .ci/run installs what these need: a missing program fails, named.
    if let Some(reason) = kind.missing() {
        panic!("cannot run this test: {reason}");
    }
    let dir = TempDir::new();
    let since = dir.join("since");
    let sockhold = start(kind, mode, &since);
    let first = expect_ready_once_serving(&sockhold, 1, kind, mode, &since);
    let syscall = wait_blocked_in(first, kind);
    eprintln!("{kind:?} under {mode:?}: pid {first} waits in {syscall}");
    let address = sockhold.tcp_address(0);
    let answer = kind.request(address).unwrap();
    assert_eq!(answer_pid(&answer), first.as_raw(), "{answer}");

    let stop = Arc::new(AtomicBool::new(false));
    let client = hammer(Arc::clone(&stop), move || kind.request(address));
    let mut serving = vec![first];
    for generation in 2..=3 {
        sockhold.signal(Signal::SIGHUP);
        serving.push(expect_ready_once_serving(
            &sockhold, generation, kind, mode, &since,
        ));
        sockhold.wait_for(&format!("generation {} exited", generation - 1));
    }
    // Generation 2 has exited: this answer is generation 3's.
    let answer = kind.request(address).unwrap();
    assert_eq!(answer_pid(&answer), serving[2].as_raw(), "{answer}");
    stop.store(true, Ordering::SeqCst);
    let (answered, failures, pids) = client.join().unwrap();
    let log = sockhold.log_text();
    assert!(
        failures.is_empty(),
        "{} of {} connections failed: {:?}\nlog:\n{log}",
        failures.len(),
        answered + failures.len(),
        &failures[..failures.len().min(5)]
    );
    for pid in &serving {
        assert!(
            pids.contains(&pid.as_raw()),
            "pid {pid} never answered ({pids:?})\nlog:\n{log}"
        );
    }
    // Each old generation was told to stop only once the new one was ready.
    let position = |needle: &str| {
        log.lines()
            .position(|line| line.contains(needle))
            .unwrap_or_else(|| panic!("no {needle:?} in log:\n{log}"))
    };
    for generation in 2..=3 {
        assert!(
            position(&format!("generation {} stopping", generation - 1))
                > position(&format!("generation {generation} ready")),
            "generation {} stopped before {generation} was ready:\n{log}",
            generation - 1
        );
    }
}

#[test]
fn asyncio_epoll_is_ready_once_serving_under_ready_accepting() {
    ready_once_serving_and_reloads_without_a_failed_connection(Kind::Asyncio, Mode::Accepting);
}

#[test]
fn asyncio_epoll_is_ready_once_serving_by_default() {
    ready_once_serving_and_reloads_without_a_failed_connection(Kind::Asyncio, Mode::Default);
}

#[test]
fn http_server_poll_is_ready_once_serving_under_ready_accepting() {
    ready_once_serving_and_reloads_without_a_failed_connection(Kind::HttpServer, Mode::Accepting);
}

#[test]
fn http_server_poll_is_ready_once_serving_by_default() {
    ready_once_serving_and_reloads_without_a_failed_connection(Kind::HttpServer, Mode::Default);
}

#[test]
fn blocking_accept_is_ready_once_serving_under_ready_accepting() {
    ready_once_serving_and_reloads_without_a_failed_connection(Kind::Blocking, Mode::Accepting);
}

#[test]
fn blocking_accept_is_ready_once_serving_by_default() {
    ready_once_serving_and_reloads_without_a_failed_connection(Kind::Blocking, Mode::Default);
}

#[test]
fn accept_in_another_thread_is_ready_once_serving_under_ready_accepting() {
    ready_once_serving_and_reloads_without_a_failed_connection(Kind::Threaded, Mode::Accepting);
}

#[test]
fn accept_in_another_thread_is_ready_once_serving_by_default() {
    ready_once_serving_and_reloads_without_a_failed_connection(Kind::Threaded, Mode::Default);
}

#[test]
fn node_is_ready_once_serving_under_ready_accepting() {
    ready_once_serving_and_reloads_without_a_failed_connection(Kind::Node, Mode::Accepting);
}

#[test]
fn node_is_ready_once_serving_by_default() {
    ready_once_serving_and_reloads_without_a_failed_connection(Kind::Node, Mode::Default);
}

#[test]
fn gunicorn_is_ready_once_a_worker_accepts_under_ready_accepting() {
    ready_once_serving_and_reloads_without_a_failed_connection(Kind::Gunicorn, Mode::Accepting);
}

/// By default, gunicorn's early READY=1 is noted and readiness waits for
/// its worker to be seen accepting.
#[test]
fn gunicorn_is_ready_once_a_worker_accepts_not_on_its_early_ready_1() {
    ready_once_serving_and_reloads_without_a_failed_connection(Kind::Gunicorn, Mode::Default);
}

/// `sh -c 'exec env $(cat FILE)'`: each generation runs the command that
/// FILE holds when it starts ("VAR=VALUE ... PROGRAM ARGS", split at
/// spaces), in the same process.
fn command_from(file: &Path) -> Vec<String> {
    ["sh", "-c", "exec env $(cat \"$0\")"]
        .into_iter()
        .map(String::from)
        .chain([file.to_str().unwrap().to_string()])
        .collect()
}

/// The command line, for a `command_from` file, of `script` booting for
/// `boot_seconds`.
fn python_line(script: &str, boot_seconds: &str) -> String {
    format!(
        "SERVER_BOOT_SECONDS={boot_seconds} python3 {}",
        server(script)
    )
}

/// sockhold in `mode` with `ready_timeout`, in `dir`, whose generation 1
/// is ready (test_child, which serves at once: a Python server could take
/// longer than a short `ready_timeout` just to start on a loaded machine);
/// then a reload to the
/// command `next` (`on_start` is called with its pid once it has started),
/// which must fail for not being ready in time while generation 1 keeps
/// serving, untouched.
fn reload_fails_and_the_old_keeps_serving(
    dir: &TempDir,
    mode: Mode,
    next: &str,
    ready_timeout: &str,
    on_start: impl FnOnce(&Sockhold, Pid),
) {
    let command_file = dir.join("command");
    std::fs::write(&command_file, format!("{} --graceful", test_child_bin())).unwrap();
    let sockhold = Sockhold::command()
        .env("SERVER_SINCE_FILE", dir.join("since"))
        .args(["-l", "127.0.0.1:0", "--ready-timeout", ready_timeout])
        .args(mode.args())
        .arg("--")
        .args(command_from(&command_file))
        .start();
    let ready = sockhold.wait_for("generation 1 ready");
    assert!(ready.contains("ready: accepting on fd 3"), "{ready}");
    let address = sockhold.tcp_address(0);
    let first = answer_pid(&request_tcp(address).unwrap());
    std::fs::write(&command_file, next).unwrap();
    sockhold.signal(Signal::SIGHUP);
    let started = sockhold.wait_for("generation 2 started: pid ");
    on_start(&sockhold, started_pid(&started));
    let failed = sockhold.wait_for("reload failed");
    assert!(
        failed.contains(&format!(
            "generation 2 not ready after {ready_timeout}; generation 1 keeps serving"
        )),
        "{failed}\nlog:\n{}",
        sockhold.log_text()
    );
    sockhold.wait_for("generation 2 exited");
    for _ in 0..20 {
        assert_eq!(answer_pid(&request_tcp(address).unwrap()), first);
    }
    let log = sockhold.log_text();
    assert!(!log.contains("generation 1 stopping"), "{log}");
    assert!(!log.contains("generation 2 ready"), "{log}");
}

#[test]
fn server_that_holds_the_socket_but_never_accepts_is_not_ready_under_ready_accepting() {
    let next = format!("python3 {}", server("never_accepts.py"));
    reload_fails_and_the_old_keeps_serving(
        &TempDir::new(),
        Mode::Accepting,
        &next,
        "2s",
        |_, _| {},
    );
}

/// It can be observed, so the default does not fall back to the 1 s delay.
#[test]
fn server_that_holds_the_socket_but_never_accepts_is_not_ready_by_default() {
    let next = format!("python3 {}", server("never_accepts.py"));
    reload_fails_and_the_old_keeps_serving(&TempDir::new(), Mode::Default, &next, "2s", |_, _| {});
}

#[test]
fn server_that_closes_the_socket_is_not_ready_under_ready_accepting() {
    let next = format!("python3 {}", server("closes_socket.py"));
    reload_fails_and_the_old_keeps_serving(
        &TempDir::new(),
        Mode::Accepting,
        &next,
        "2s",
        |_, _| {},
    );
}

/// DESIGN.md §1: `auto` falls back to the 1 s delay "only where nothing can
/// be observed"; this child is observed (its fds are read) and serves
/// nothing.
#[test]
fn server_that_closes_the_socket_is_not_ready_by_default() {
    let next = format!("python3 {}", server("closes_socket.py"));
    reload_fails_and_the_old_keeps_serving(&TempDir::new(), Mode::Default, &next, "2s", |_, _| {});
}

/// Generation 2 would serve after 3 s of boot, well within the 5 s ready
/// timeout, but is stopped (SIGSTOP) as soon as it has started: it never
/// serves, and is not ready.
fn stopped_new_generation_is_not_ready(mode: Mode) {
    let dir = TempDir::new();
    let next = python_line("blocking_server.py", "3");
    // Held (not dropped, which would SIGKILL it) until the test ends.
    let mut stopped = None;
    reload_fails_and_the_old_keeps_serving(&dir, mode, &next, "5s", |sockhold, pid| {
        let child = Process::child_of(pid, sockhold.pid).expect("generation 2 is sockhold's child");
        child.signal(Signal::SIGSTOP).unwrap();
        stopped = Some(child);
    });
    let pid = stopped.as_ref().unwrap().pid();
    // The stop landed while it booted (had it not, this test would prove
    // nothing): it never wrote that it serves.
    assert_eq!(
        serving_since(&dir.join("since"), pid),
        None,
        "generation 2 (pid {pid}) was serving before it was stopped: the stop came too late"
    );
}

#[test]
fn stopped_new_generation_is_not_ready_under_ready_accepting() {
    stopped_new_generation_is_not_ready(Mode::Accepting);
}

#[test]
fn stopped_new_generation_is_not_ready_by_default() {
    stopped_new_generation_is_not_ready(Mode::Default);
}

/// A python3 that any user may run: Debian's, rather than one found first
/// on $PATH in a home directory that `nobody` cannot enter.
fn python_for_any_user() -> &'static str {
    if Path::new("/usr/bin/python3").exists() {
        "/usr/bin/python3"
    } else {
        "python3"
    }
}

/// sockhold by default, as a user that is not root (`nobody` when the test
/// runs as root), with a child that makes itself non-dumpable: sockhold
/// cannot read its /proc entries, says so, and falls back. Returns
/// sockhold and the child's pid.
fn unobservable_child(boot_seconds: &str) -> (Sockhold, Pid, String) {
    let mut builder = Sockhold::command();
    if nix::unistd::geteuid().is_root() {
        builder = builder.uid(65534, 65534);
    }
    let sockhold = builder
        .env("SERVER_BOOT_SECONDS", boot_seconds)
        .args(["-l", "127.0.0.1:0", "--", python_for_any_user()])
        .arg(server("undumpable_server.py"))
        .start();
    let child = started_pid(&sockhold.wait_for("generation 1 started: pid "));
    let ready = sockhold.wait_for("generation 1 ready");
    let answer = request_tcp(sockhold.tcp_address(0)).unwrap();
    assert_eq!(answer_pid(&answer), child.as_raw(), "{answer}");
    (sockhold, child, ready)
}

#[test]
fn unobservable_child_without_ready_1_is_ready_by_the_one_second_fallback() {
    let (sockhold, child, ready) = unobservable_child(&BOOT.as_secs_f64().to_string());
    let log = sockhold.log_text();
    assert!(
        ready.contains("generation 1 ready: still running after ")
            && ready.contains(&format!("(cannot observe pid {child}: ")),
        "{ready}\nlog:\n{log}"
    );
    assert!(after_in(&ready) >= Duration::from_secs(1), "{ready}");
}

#[test]
fn unobservable_child_that_sends_ready_1_is_ready_on_it() {
    // test_child, not python: it is non-dumpable and sends READY=1 within
    // milliseconds of its start plus the 200 ms, far from the 1 s fallback
    // even on a loaded machine.
    let mut builder = Sockhold::command();
    if nix::unistd::geteuid().is_root() {
        builder = builder.uid(65534, 65534);
    }
    let sockhold = builder
        .args(["-l", "127.0.0.1:0", "--", test_child_bin()])
        .args(["--undumpable", "--ready-after", "200"])
        .start();
    let child = started_pid(&sockhold.wait_for("generation 1 started: pid "));
    let ready = sockhold.wait_for("generation 1 ready");
    let answer = request_tcp(sockhold.tcp_address(0)).unwrap();
    assert_eq!(answer_pid(&answer), child.as_raw(), "{answer}");
    let log = sockhold.log_text();
    assert!(
        ready.contains("generation 1 ready: READY=1 after "),
        "{ready}\nlog:\n{log}"
    );
    assert!(
        log.contains(&format!("cannot observe pid {child}")),
        "sockhold did not say it cannot observe pid {child}:\n{log}"
    );
}

#[test]
fn a_ready_timeout_within_the_fallback_is_warned_of_and_an_unobservable_child_fails_it() {
    // As for the test above: root could observe a non-dumpable child.
    let mut builder = Sockhold::command();
    if nix::unistd::geteuid().is_root() {
        builder = builder.uid(65534, 65534);
    }
    let mut sockhold = builder
        .args(["-l", "127.0.0.1:0", "--ready-timeout", "800ms"])
        .args(["--restart", "never", "--", test_child_bin(), "--undumpable"])
        .start();
    sockhold.wait_for(
        "warning: --ready-timeout 800ms is not above the 1s after which --ready auto takes a child it cannot observe",
    );
    sockhold.wait_for("generation 1 not ready after 800ms");
    // The stopped child's status, as for any start that never got ready.
    sockhold.exits_with(143);
}

/// `status` says what made each generation ready.
#[test]
fn status_says_the_generation_was_seen_accepting() {
    let dir = TempDir::new();
    let control = dir.join("ctl");
    let sockhold = Sockhold::command()
        .env("SERVER_BOOT_SECONDS", "0")
        .args(["-l", "127.0.0.1:0", "--control"])
        .arg(&control)
        .args(["--", "python3", &server("blocking_server.py")])
        .start();
    let ready = sockhold.wait_for("generation 1 ready: ");
    let why = ready.split("ready: ").nth(1).unwrap();
    let output = std::process::Command::new(sockhold_bin())
        .arg("status")
        .arg("--control")
        .arg(&control)
        .stdin(std::process::Stdio::null())
        .output()
        .expect("sockhold status");
    let reply = String::from_utf8_lossy(&output.stdout).to_string();
    assert!(output.status.success(), "{reply}");
    // Parsed by a real JSON parser.
    let parsed = std::process::Command::new("python3")
        .args([
            "-c",
            "import json, sys\n\
             g = json.loads(sys.argv[1])['generations']\n\
             print(len(g), g[0]['ready_by'])",
            &reply,
        ])
        .output()
        .expect("python3");
    assert!(parsed.status.success(), "not JSON: {reply}");
    let fields = String::from_utf8_lossy(&parsed.stdout).trim().to_string();
    assert!(why.starts_with("accepting on fd 3 (pid "), "{ready}");
    assert_eq!(fields, format!("1 {why}"), "{reply}");
}
