//! Start-up, against what it may find: a live Unix socket that does not
//! accept, an `fd:N` with nothing inherited on it, a pid file that another
//! sockhold holds or names planted in its directory, an inherited socket at
//! the top of the fd limit, and a failure at any step after binding, which
//! must leave no file behind.

use crate::harness::*;
use nix::errno::Errno;
use nix::libc;
use nix::sys::signal::Signal;
use nix::sys::socket::{self, AddressFamily, Backlog, SockFlag, SockType, UnixAddr};
use std::ffi::CString;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::FileTypeExt;
use std::path::Path;

/// The one `sockhold: error:` line of a log.
fn error_line(log: &str) -> &str {
    let errors: Vec<&str> = log
        .lines()
        .filter(|line| line.starts_with("sockhold: error: "))
        .collect();
    assert_eq!(errors.len(), 1, "exactly one error line; log:\n{log}");
    errors[0]
}

/// Lowers sockhold's soft RLIMIT_NOFILE to `limit` from its first
/// instruction on (the hook runs in the forked process, before exec).
fn with_fd_limit(builder: Builder, limit: u64) -> Builder {
    let lower = move || {
        let mut current = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: getrlimit(2) fills in `current`; async-signal-safe.
        if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut current) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
        current.rlim_cur = limit;
        // SAFETY: setrlimit(2) reads `current`; async-signal-safe.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &current) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(())
    };
    // SAFETY: the hook makes only async-signal-safe calls and allocates
    // nothing.
    unsafe { builder.pre_exec(lower) }
}

#[test]
fn a_live_unix_socket_whose_queue_is_full_is_refused_at_once() {
    let dir = TempDir::new();
    let path = dir.join("full.sock");
    let address = UnixAddr::new(&path).unwrap();
    let listener = socket::socket(
        AddressFamily::Unix,
        SockType::Stream,
        SockFlag::SOCK_CLOEXEC,
        None,
    )
    .unwrap();
    socket::bind(listener.as_raw_fd(), &address).unwrap();
    socket::listen(&listener, Backlog::new(0).unwrap()).unwrap();
    // A server that does not accept: its queue fills up, and a blocking
    // connect(2) would wait for room for as long as it does not.
    let mut queued: Vec<OwnedFd> = Vec::new();
    let full = (0..64).any(|_| {
        let client = socket::socket(
            AddressFamily::Unix,
            SockType::Stream,
            SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK,
            None,
        )
        .unwrap();
        match socket::connect(client.as_raw_fd(), &address) {
            Ok(()) => {
                queued.push(client);
                false
            }
            Err(Errno::EAGAIN) => true,
            Err(errno) => panic!("connect: {errno}"),
        }
    });
    assert!(full, "the accept queue never filled");

    let (code, log) = run_to_exit(&["-l", path.to_str().unwrap(), "--", "true"]);
    assert_eq!(code, 71, "{log}");
    assert_eq!(
        error_line(&log),
        format!(
            "sockhold: error: cannot listen on '{}': already in use by another process (stop it, or choose another path)",
            path.display()
        )
    );
    assert!(
        std::fs::symlink_metadata(&path)
            .unwrap()
            .file_type()
            .is_socket(),
        "the live socket's file is left alone"
    );
}

#[test]
fn fd_n_adopts_only_an_fd_that_was_open_when_sockhold_started() {
    // Nothing is inherited on fd 3, so the TCP socket sockhold binds first
    // lands there; `fd:3` must not take it for an inherited one.
    let (code, log) = run_to_exit(&["-l", "127.0.0.1:0", "-l", "fd:3", "--", "true"]);
    assert_eq!(code, 64, "{log}");
    assert_eq!(
        error_line(&log),
        "sockhold: error: cannot adopt 'fd:3': nothing was open on fd 3 when sockhold started (pass a listening stream socket or a bound datagram socket on that fd)"
    );
}

fn with_pid_file(pid_file: &Path) -> Builder {
    Sockhold::command()
        .args(["-l", "127.0.0.1:0", "--pid-file"])
        .arg(pid_file)
        .args(["--", test_child_bin()])
}

#[test]
fn a_pid_file_held_by_a_running_sockhold_is_refused_and_stays_its_own() {
    let dir = TempDir::new();
    let pid_file = dir.join("app.pid");
    let mut first = with_pid_file(&pid_file).start();
    first.wait_for("generation 1 started");

    let mut second = with_pid_file(&pid_file).start();
    let status = second.wait_exit();
    let log = second.log_text();
    assert_eq!(status.code(), Some(71), "{log}");
    assert_eq!(
        error_line(&log),
        format!(
            "sockhold: error: cannot write pid file '{}': in use by running pid {} (another sockhold with this --pid-file? stop it first, or choose another path)",
            pid_file.display(),
            first.pid
        )
    );
    assert!(!log.contains("started: pid"), "no child started: {log}");
    // The first one's file is untouched, and still removed at its exit.
    assert_eq!(
        std::fs::read_to_string(&pid_file).unwrap(),
        format!("{}\n", first.pid)
    );
    first.signal(Signal::SIGTERM);
    first.exits_with(0);
    assert!(!pid_file.exists());
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
}

#[test]
fn a_pid_file_that_nobody_holds_is_replaced() {
    // What a sockhold killed with SIGKILL leaves: its pid, unlocked.
    let dir = TempDir::new();
    let pid_file = dir.join("app.pid");
    std::fs::write(&pid_file, "999999\n").unwrap();
    let mut sockhold = with_pid_file(&pid_file).start();
    sockhold.wait_for("generation 1 started");
    assert_eq!(
        std::fs::read_to_string(&pid_file).unwrap(),
        format!("{}\n", sockhold.pid)
    );
    sockhold.signal(Signal::SIGTERM);
    sockhold.exits_with(0);
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
}

#[test]
fn a_pid_file_path_that_is_a_directory_or_a_fifo_is_refused_and_left_alone() {
    let dir = TempDir::new();
    let socket_file = dir.join("app.sock");
    let fifo = dir.join("app.pid");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
    // A directory is refused with the command line, before anything is
    // bound; a FIFO only when sockhold comes to write the file.
    let cases = [
        (
            dir.path().to_path_buf(),
            64,
            format!(
                "cannot use --pid-file '{0}': it is a directory (name a file in it, e.g. {0}/sockhold.pid)",
                dir.path().display()
            ),
        ),
        (
            fifo.clone(),
            71,
            format!(
                "cannot write pid file '{}': the file exists and is a FIFO (remove it or choose another path)",
                fifo.display()
            ),
        ),
    ];
    for (pid_file, code, expected) in cases {
        let mut sockhold = Sockhold::command()
            .arg("-l")
            .arg(&socket_file)
            .arg("--pid-file")
            .arg(&pid_file)
            .args(["--", "true"])
            .start();
        let status = sockhold.wait_exit();
        let log = sockhold.log_text();
        assert_eq!(status.code(), Some(code), "{log}");
        assert_eq!(error_line(&log), format!("sockhold: error: {expected}"));
    }
    let kind = std::fs::symlink_metadata(&fifo).unwrap().file_type();
    assert!(kind.is_fifo());
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
}

/// What a local attacker may plant at a name sockhold could use.
#[derive(Clone, Copy, Debug)]
enum Plant {
    /// A hard link to a file they want overwritten.
    HardLink,
    /// A FIFO, which blocks whoever opens it for writing.
    Fifo,
}

/// A pre_exec hook that plants `plant` at `<dir>/.app.pid.<pid>.tmp`, the
/// name sockhold used to write its pid file through, for the pid that
/// sockhold is about to get (the hook runs in that very process).
fn plant_at_old_temporary_name(
    dir: &Path,
    plant: Plant,
    victim: &Path,
) -> impl FnMut() -> std::io::Result<()> + Send + Sync + 'static {
    let mut prefix = dir.as_os_str().as_bytes().to_vec();
    prefix.extend_from_slice(b"/.app.pid.");
    let victim = CString::new(victim.as_os_str().as_bytes()).unwrap();
    move || {
        // Built in a buffer on the stack: nothing may allocate here.
        let mut name = [0u8; 512];
        name[..prefix.len()].copy_from_slice(&prefix);
        let mut end = prefix.len();
        // SAFETY: getpid(2) only reads.
        let mut pid = unsafe { libc::getpid() } as u32;
        let mut digits = [0u8; 10];
        let mut count = 0;
        loop {
            digits[count] = b'0' + (pid % 10) as u8;
            count += 1;
            pid /= 10;
            if pid == 0 {
                break;
            }
        }
        for digit in digits[..count].iter().rev() {
            name[end] = *digit;
            end += 1;
        }
        name[end..end + 4].copy_from_slice(b".tmp");
        let name = name.as_ptr().cast::<libc::c_char>();
        let result = match plant {
            // SAFETY: link(2) with two NUL-terminated paths; async-signal-safe.
            Plant::HardLink => unsafe { libc::link(victim.as_ptr(), name) },
            // SAFETY: mkfifo(3) (mknodat(2)) with a NUL-terminated path.
            Plant::Fifo => unsafe { libc::mkfifo(name, 0o666) },
        };
        if result != 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(())
    }
}

#[test]
fn nothing_planted_next_to_the_pid_file_is_written_through_or_opened() {
    for plant in [Plant::HardLink, Plant::Fifo] {
        let dir = TempDir::new();
        let pid_file = dir.join("app.pid");
        let victim = dir.join("victim");
        std::fs::write(&victim, "precious\n").unwrap();
        let hook = plant_at_old_temporary_name(dir.path(), plant, &victim);
        // SAFETY: the hook makes only async-signal-safe calls and allocates
        // nothing (see above).
        let mut sockhold = unsafe { with_pid_file(&pid_file).pre_exec(hook) }.start();
        let planted = dir.join(&format!(".app.pid.{}.tmp", sockhold.pid));
        // A FIFO opened for writing would hold start-up here.
        sockhold.wait_for("generation 1 started");
        assert_eq!(
            std::fs::read_to_string(&pid_file).unwrap(),
            format!("{}\n", sockhold.pid),
            "{plant:?}"
        );
        assert_eq!(
            std::fs::read_to_string(&victim).unwrap(),
            "precious\n",
            "written through a {plant:?}"
        );
        sockhold.signal(Signal::SIGTERM);
        sockhold.exits_with(0);
        assert!(!pid_file.exists());
        let kind = std::fs::symlink_metadata(&planted).unwrap().file_type();
        match plant {
            Plant::HardLink => assert!(kind.is_file()),
            Plant::Fifo => assert!(kind.is_fifo()),
        }
    }
}

#[test]
fn an_inherited_socket_at_the_top_of_the_fd_limit_reaches_the_child() {
    // The socket is inherited on the highest fd the limit allows: there is
    // no free fd above it, where the old shuffle parked it.
    const HIGH: libc::c_int = 60;
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let address = listener.local_addr().unwrap();
    let raw = listener.as_raw_fd();
    let inherit_high = move || {
        // SAFETY: dup2(2) in the forked process only; async-signal-safe.
        if unsafe { libc::dup2(raw, HIGH) } < 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(())
    };
    // SAFETY: the hook makes only async-signal-safe calls.
    let builder = unsafe { Sockhold::command().pre_exec(inherit_high) };
    let sockhold = with_fd_limit(builder, HIGH as u64 + 1)
        .args(["-l", &format!("fd:{HIGH}"), "--", test_child_bin()])
        .start();
    sockhold.wait_for("generation 1 started");
    let answer = request_tcp(address).unwrap_or_else(|error| {
        panic!(
            "no answer on the inherited socket: {error}; log:\n{}",
            sockhold.log_text()
        )
    });
    assert!(answer.contains("fd=3"), "{answer}");
}

#[test]
fn a_failed_start_leaves_no_file_behind_whichever_step_fails() {
    // Each fd limit makes start-up run out of fds one step later: binding
    // the socket, the control socket, the pid file, the event loop, the
    // first child... Every one of those exits must leave the directory as
    // it found it.
    let mut started = false;
    for limit in 3..=48 {
        let dir = TempDir::new();
        let mut sockhold = with_fd_limit(Sockhold::command(), limit)
            .arg("-l")
            .arg(dir.join("app.sock"))
            .arg("--control")
            .arg(dir.join("ctl"))
            .arg("--pid-file")
            .arg(dir.join("app.pid"))
            .args(["--restart", "never", "--", test_child_bin()])
            .start();
        let running = sockhold
            .wait_for_within("generation 1 started", WAIT)
            .is_some();
        if running {
            sockhold.signal(Signal::SIGTERM);
        }
        let status = sockhold.wait_exit();
        let log = sockhold.log_text();
        // Below a few fds the dynamic loader fails before sockhold runs.
        let loaded = !log.contains("error while loading shared libraries");
        if loaded && !running {
            assert_eq!(status.code(), Some(71), "limit {limit}; log:\n{log}");
            assert!(
                log.to_lowercase().contains("too many open files"),
                "limit {limit}; log:\n{log}"
            );
        }
        let left: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|entry| entry.unwrap().file_name())
            .collect();
        assert!(
            left.is_empty(),
            "limit {limit}: left behind {left:?}; log:\n{log}"
        );
        if running {
            started = true;
            break;
        }
    }
    assert!(started, "sockhold never started, even with 48 fds");
}
