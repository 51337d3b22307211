//! Per-connection (inetd) mode and lazy start: one child per connection,
//! on fd 3 or on stdin/stdout, with its address in the environment, within
//! the limits, through floods and stops; `--lazy` starts the server only
//! when a connection is waiting.

use crate::harness::*;
use nix::sys::socket::{self, AddressFamily, SockFlag, SockType, SockaddrIn};
use nix::unistd::Pid;
use std::io::{BufRead, BufReader, ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

/// Sends one line, half-closes, and returns everything that comes back.
fn echo_tcp(address: SocketAddr, line: &str) -> std::io::Result<String> {
    let mut stream = TcpStream::connect_timeout(&address, Duration::from_secs(5))?;
    stream.set_read_timeout(Some(WAIT))?;
    stream.write_all(line.as_bytes())?;
    stream.shutdown(Shutdown::Write)?;
    let mut answer = String::new();
    stream.read_to_string(&mut answer)?;
    Ok(answer)
}

fn echo_unix(path: &Path, line: &str) -> std::io::Result<String> {
    let mut stream = UnixStream::connect(path)?;
    stream.set_read_timeout(Some(WAIT))?;
    stream.write_all(line.as_bytes())?;
    stream.shutdown(Shutdown::Write)?;
    let mut answer = String::new();
    stream.read_to_string(&mut answer)?;
    Ok(answer)
}

/// A connection that has had its echo: its child is running until it is
/// dropped.
struct Held {
    stream: TcpStream,
}

/// Connects (from `source`, if given), sends a line and waits for its echo.
fn hold(address: SocketAddr, source: Option<&str>) -> Held {
    let mut stream = connect_from(address, source);
    stream.set_read_timeout(Some(WAIT)).unwrap();
    stream.write_all(b"held\n").unwrap();
    let mut line = String::new();
    BufReader::new(&stream).read_line(&mut line).unwrap();
    assert_eq!(line, "held\n");
    Held { stream }
}

/// A TCP connection from a chosen loopback address (127.0.0.2 is another
/// source as far as --max-per-source is concerned).
fn connect_from(address: SocketAddr, source: Option<&str>) -> TcpStream {
    let Some(source) = source else {
        return TcpStream::connect_timeout(&address, Duration::from_secs(5)).unwrap();
    };
    let fd = socket::socket(
        AddressFamily::Inet,
        SockType::Stream,
        SockFlag::SOCK_CLOEXEC,
        None,
    )
    .unwrap();
    let from: std::net::SocketAddrV4 = format!("{source}:0").parse().unwrap();
    socket::bind(fd.as_raw_fd(), &SockaddrIn::from(from)).unwrap();
    let SocketAddr::V4(to) = address else {
        panic!("IPv4 only")
    };
    socket::connect(fd.as_raw_fd(), &SockaddrIn::from(to)).unwrap();
    TcpStream::from(fd)
}

/// Asserts that the server closed the connection without answering.
fn assert_closed_without_answer(mut stream: TcpStream) {
    stream.set_read_timeout(Some(WAIT)).unwrap();
    // The write may fail already: the server may have closed.
    let _ = stream.write_all(b"refused?\n");
    let mut answer = Vec::new();
    match stream.read_to_end(&mut answer) {
        Ok(_) => assert!(answer.is_empty(), "answered: {answer:?}"),
        Err(error) => assert!(
            matches!(
                error.kind(),
                ErrorKind::ConnectionReset | ErrorKind::BrokenPipe
            ),
            "{error}"
        ),
    }
}

/// Live (not zombie) children of `parent`, and zombie ones.
fn children_of(parent: Pid) -> (Vec<Pid>, Vec<Pid>) {
    let mut live = Vec::new();
    let mut zombies = Vec::new();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return (live, zombies);
    };
    for entry in entries.flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        let Some((_, rest)) = stat.rsplit_once(')') else {
            continue;
        };
        let fields: Vec<&str> = rest.split_whitespace().collect();
        if fields.get(1).and_then(|p| p.parse::<i32>().ok()) == Some(parent.as_raw()) {
            if fields[0] == "Z" {
                zombies.push(Pid::from_raw(pid));
            } else {
                live.push(Pid::from_raw(pid));
            }
        }
    }
    (live, zombies)
}

fn fd_count(pid: Pid) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|dir| dir.count())
        .unwrap_or(0)
}

/// Waits (bounded) until `parent` has no child at all, live or zombie.
fn wait_for_no_children(parent: Pid) {
    let deadline = Instant::now() + WAIT;
    loop {
        let (live, zombies) = children_of(parent);
        if live.is_empty() && zombies.is_empty() {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "children left: {live:?}, zombies: {zombies:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Most children running at once, from the `-v` log: each start is
/// "connection from ...: pid P", each end "connection child pid P ... exited".
fn most_running_in_log(log: &str) -> (usize, usize) {
    let (mut running, mut most, mut started) = (0usize, 0usize, 0usize);
    for line in log.lines() {
        if line.contains("sockhold: debug: connection from ") && line.contains(": pid ") {
            running += 1;
            started += 1;
            most = most.max(running);
        } else if line.contains("sockhold: debug: connection child pid ") {
            running = running.saturating_sub(1);
        }
    }
    (most, started)
}

#[test]
fn inetd_mode_echoes_over_tcp_v4_v6_and_unix() {
    let dir = TempDir::new();
    let path = dir.join("echo.sock");
    let sockhold = Sockhold::command()
        .args(["--accept", "--inetd", "-l", "127.0.0.1:0", "-l", "[::1]:0"])
        .arg("-l")
        .arg(&path)
        .args(["--", "cat"])
        .start();
    sockhold.wait_for("accepting connections");
    assert_eq!(
        echo_tcp(sockhold.tcp_address(0), "over v4\n").unwrap(),
        "over v4\n"
    );
    assert!(sockhold.tcp_address(1).is_ipv6());
    assert_eq!(
        echo_tcp(sockhold.tcp_address(1), "over v6\n").unwrap(),
        "over v6\n"
    );
    assert_eq!(echo_unix(&path, "over unix\n").unwrap(), "over unix\n");
}

#[test]
fn fd3_mode_echoes_over_tcp_v4_v6_and_unix() {
    let dir = TempDir::new();
    let path = dir.join("echo.sock");
    let sockhold = Sockhold::command()
        .args(["--accept", "-l", "127.0.0.1:0", "-l", "[::1]:0"])
        .arg("-l")
        .arg(&path)
        .args(["--", "sh", "-c", "exec cat <&3 >&3"])
        .start();
    sockhold.wait_for("accepting connections");
    for index in 0..2 {
        let address = sockhold.tcp_address(index);
        assert_eq!(echo_tcp(address, "on fd 3\n").unwrap(), "on fd 3\n");
    }
    assert_eq!(echo_unix(&path, "on fd 3\n").unwrap(), "on fd 3\n");
}

#[test]
fn each_child_gets_its_connection_alone_with_its_addresses_in_the_environment() {
    let dir = TempDir::new();
    let path = dir.join("env.sock");
    let sockhold = Sockhold::command()
        .args(["--accept", "-l", "127.0.0.1:0", "-l", "[::1]:0", "-l", "0"])
        .arg("-l")
        .arg(&path)
        .args(["--", test_child_bin(), "--connection"])
        .start();
    sockhold.wait_for("accepting connections");

    let ask = |address: SocketAddr| {
        let mut stream = TcpStream::connect(address).unwrap();
        stream.set_read_timeout(Some(WAIT)).unwrap();
        let client = stream.local_addr().unwrap();
        let mut answer = String::new();
        stream.read_to_string(&mut answer).unwrap();
        (client, report_fields(&answer), answer)
    };

    // IPv4, on a socket bound to one address.
    let server = sockhold.tcp_address(0);
    let (client, report, answer) = ask(server);
    assert_eq!(report["fds"], "0 1 2 3", "only the connection: {answer}");
    assert_eq!(report["LISTEN_FDS"], "1");
    assert_eq!(report["LISTEN_PID"], report["pid"]);
    assert_eq!(report["LISTEN_FDNAMES"], "connection");
    assert_eq!(report["NOTIFY_SOCKET"], "UNSET");
    assert_eq!(report["SigIgn"], "0000000000000000", "{answer}");
    assert_eq!(report["SigBlk"], "0000000000000000", "{answer}");
    assert_eq!(report["PROTO"], "TCP");
    assert_eq!(report["TCPREMOTEIP"], "127.0.0.1");
    assert_eq!(report["TCPREMOTEPORT"], client.port().to_string());
    assert_eq!(report["TCPLOCALIP"], "127.0.0.1");
    assert_eq!(report["TCPLOCALPORT"], server.port().to_string());
    assert_eq!(report["REMOTE_ADDR"], "127.0.0.1");
    assert_eq!(report["REMOTE_PORT"], client.port().to_string());
    assert_eq!(report["UNIXREMOTEUID"], "UNSET");

    // IPv6.
    let server = sockhold.tcp_address(1);
    let (client, report, _) = ask(server);
    assert_eq!(report["TCPREMOTEIP"], "::1");
    assert_eq!(report["REMOTE_ADDR"], "::1");
    assert_eq!(report["REMOTE_PORT"], client.port().to_string());
    assert_eq!(report["TCPLOCALIP"], "::1");

    // A dual-stack socket bound to every address: an IPv4 client is written
    // as IPv4, and the local address is the one it connected to.
    let any = sockhold.tcp_address(2);
    let server = SocketAddr::new("127.0.0.1".parse().unwrap(), any.port());
    let (_, report, answer) = ask(server);
    assert_eq!(report["TCPREMOTEIP"], "127.0.0.1", "{answer}");
    assert_eq!(report["TCPLOCALIP"], "127.0.0.1", "{answer}");
    assert_eq!(report["TCPLOCALPORT"], any.port().to_string());

    // Unix: the peer's credentials.
    let mut stream = UnixStream::connect(&path).unwrap();
    stream.set_read_timeout(Some(WAIT)).unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).unwrap();
    let report = report_fields(&answer);
    assert_eq!(report["PROTO"], "UNIX");
    assert_eq!(report["UNIXREMOTEUID"], nix::unistd::getuid().to_string());
    assert_eq!(report["UNIXREMOTEGID"], nix::unistd::getgid().to_string());
    assert_eq!(report["UNIXREMOTEPID"], std::process::id().to_string());
    assert_eq!(report["TCPREMOTEIP"], "UNSET");
    assert_eq!(report["REMOTE_ADDR"], "UNSET");
    assert_eq!(report["fds"], "0 1 2 3");
}

#[test]
fn inetd_mode_child_has_the_connection_as_stdin_and_stdout_and_no_listen_fds() {
    let sockhold = Sockhold::command()
        .args(["--accept", "--inetd", "-l", "127.0.0.1:0", "--"])
        .args([test_child_bin(), "--connection"])
        .start();
    sockhold.wait_for("accepting connections");
    let answer = request_tcp(sockhold.tcp_address(0)).unwrap();
    let report = report_fields(&answer);
    assert_eq!(report["fds"], "0 1 2", "{answer}");
    assert_eq!(report["LISTEN_FDS"], "UNSET");
    assert_eq!(report["LISTEN_PID"], "UNSET");
    assert_eq!(report["PROTO"], "TCP");
    assert_eq!(report["TCPREMOTEIP"], "127.0.0.1");
}

#[test]
fn at_max_connections_new_connections_wait_in_the_queue_and_all_are_served() {
    let sockhold = Sockhold::command()
        .args(["-v", "--accept", "--inetd", "--max-connections", "3"])
        .args(["-l", "127.0.0.1:0", "--", "cat"])
        .start();
    sockhold.wait_for("accepting connections");
    let address = sockhold.tcp_address(0);

    // Three running: the fourth is queued by the kernel, not refused.
    let mut held: Vec<Held> = (0..3).map(|_| hold(address, None)).collect();
    sockhold.wait_for("3 connections running (--max-connections)");
    let mut fourth = TcpStream::connect(address).unwrap();
    fourth.write_all(b"fourth\n").unwrap();
    let mut buffer = [0u8; 16];
    let waited = read_within(Duration::from_millis(300), |left| {
        fourth.set_read_timeout(Some(left))?;
        fourth.read(&mut buffer)
    });
    assert!(
        matches!(&waited, Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut)),
        "the fourth connection must wait: {waited:?}"
    );
    assert_eq!(children_of(sockhold.pid).0.len(), 3);
    // One ends: the fourth is served.
    drop(held.pop());
    fourth.set_read_timeout(Some(WAIT)).unwrap();
    let mut line = String::new();
    BufReader::new(&fourth).read_line(&mut line).unwrap();
    assert_eq!(line, "fourth\n");
    drop(fourth);
    drop(held);

    // N + k slow connections at once: never more than N children alive,
    // and every one served.
    let done = Arc::new(AtomicBool::new(false));
    let most_seen = Arc::new(AtomicUsize::new(0));
    let sampler = {
        let (done, most_seen, pid) = (Arc::clone(&done), Arc::clone(&most_seen), sockhold.pid);
        std::thread::spawn(move || {
            while !done.load(Ordering::SeqCst) {
                let alive = children_of(pid).0.len();
                most_seen.fetch_max(alive, Ordering::SeqCst);
                std::thread::sleep(Duration::from_millis(2));
            }
        })
    };
    let clients: Vec<_> = (0..8)
        .map(|n| {
            std::thread::spawn(move || {
                let mut stream = TcpStream::connect(address)?;
                stream.set_read_timeout(Some(WAIT))?;
                let line = format!("slow {n}\n");
                stream.write_all(line.as_bytes())?;
                let mut answer = String::new();
                BufReader::new(&stream).read_line(&mut answer)?;
                // The workload: a connection that stays open a while.
                std::thread::sleep(Duration::from_millis(200));
                Ok::<bool, std::io::Error>(answer == line)
            })
        })
        .collect();
    for client in clients {
        assert!(
            client.join().unwrap().unwrap(),
            "a slow connection was not echoed"
        );
    }
    done.store(true, Ordering::SeqCst);
    sampler.join().unwrap();
    assert!(
        most_seen.load(Ordering::SeqCst) <= 3,
        "{} children alive at once",
        most_seen.load(Ordering::SeqCst)
    );
    wait_for_no_children(sockhold.pid);
    // The log is read by another thread: wait until it has every exit.
    let deadline = Instant::now() + WAIT;
    while sockhold.log_text().matches("connection child pid ").count() < 4 + 8 {
        assert!(Instant::now() < deadline, "{}", sockhold.log_text());
        sockhold.wait_for_within("connection child pid ", Duration::from_millis(100));
    }
    let (most, started) = most_running_in_log(&sockhold.log_text());
    assert_eq!(started, 4 + 8);
    assert!(most <= 3, "{most} running at once by the log");
}

#[test]
fn over_max_per_source_a_connection_is_closed_at_once_and_logged_quietly() {
    let sockhold = Sockhold::command()
        .args(["-v", "--accept", "--inetd", "--max-per-source", "2"])
        .args(["-l", "127.0.0.1:0", "--", "cat"])
        .start();
    sockhold.wait_for("accepting connections");
    let address = sockhold.tcp_address(0);
    let first = hold(address, Some("127.0.0.1"));
    let _second = hold(address, Some("127.0.0.1"));
    assert_closed_without_answer(connect_from(address, Some("127.0.0.1")));
    sockhold.wait_for(
        "connection from 127.0.0.1 closed: 2 already running from there (--max-per-source 2)",
    );
    // Another source is not affected.
    let _other = hold(address, Some("127.0.0.2"));
    // A flood from the full source: every connection closed, and the log
    // stays short.
    for _ in 0..300 {
        assert_closed_without_answer(connect_from(address, Some("127.0.0.1")));
    }
    sockhold.wait_for("more connections closed for --max-per-source in the last 1s");
    let lines = sockhold
        .log_text()
        .lines()
        .filter(|line| line.contains("--max-per-source"))
        .count();
    assert!(lines <= 6, "{lines} log lines for 301 refusals");
    // Once one of its connections ends, the source may connect again.
    let first_pid = children_of(sockhold.pid).0.len();
    assert_eq!(first_pid, 3);
    drop(first);
    sockhold.wait_for("from 127.0.0.1 exited");
    let _again = hold(address, Some("127.0.0.1"));
}

#[test]
fn a_flood_of_2000_connections_leaves_sockhold_alive_without_leaked_fds_or_zombies() {
    let sockhold = Sockhold::command()
        .args(["--accept", "--inetd", "--max-connections", "16"])
        .args(["-l", "127.0.0.1:0", "--", "cat"])
        .start();
    sockhold.wait_for("accepting connections");
    let address = sockhold.tcp_address(0);
    let baseline = fd_count(sockhold.pid);
    assert!(baseline > 0);

    const THREADS: usize = 32;
    const EACH: usize = 63; // 2016 in all
    let start = Arc::new(Barrier::new(THREADS));
    let started = Instant::now();
    let clients: Vec<_> = (0..THREADS)
        .map(|_| {
            let start = Arc::clone(&start);
            std::thread::spawn(move || {
                start.wait();
                let mut failed = 0;
                for n in 0..EACH {
                    let line = format!("flood {n}\n");
                    match echo_tcp(address, &line) {
                        Ok(answer) if answer == line => {}
                        _ => failed += 1,
                    }
                }
                failed
            })
        })
        .collect();
    let failed: usize = clients.into_iter().map(|c| c.join().unwrap()).sum();
    let took = started.elapsed();
    assert_eq!(failed, 0, "connections failed (none may be refused)");
    assert!(took < Duration::from_secs(120), "the flood took {took:?}");
    assert!(sockhold.is_running());
    wait_for_no_children(sockhold.pid);
    assert_eq!(fd_count(sockhold.pid), baseline, "fds leaked");
    // Still serving.
    assert_eq!(echo_tcp(address, "after\n").unwrap(), "after\n");
}

#[test]
fn stop_signals_every_running_child_and_exits_zero() {
    let mut sockhold = Sockhold::command()
        .args(["--accept", "--inetd", "-l", "127.0.0.1:0", "--", "cat"])
        .start();
    sockhold.wait_for("accepting connections");
    let address = sockhold.tcp_address(0);
    let held: Vec<Held> = (0..3).map(|_| hold(address, None)).collect();
    sockhold.signal(nix::sys::signal::Signal::SIGTERM);
    sockhold.wait_for("SIGTERM received: stopping; SIGTERM to 3 running connection children");
    // Each child died of SIGTERM, so each connection ends.
    for mut connection in held {
        let mut rest = Vec::new();
        let _ = connection.stream.read_to_end(&mut rest);
        assert!(rest.is_empty());
    }
    sockhold.exits_with(0);
}

#[test]
fn children_that_ignore_the_stop_signal_are_killed_after_the_stop_timeout() {
    let mut sockhold = Sockhold::command()
        .args(["--accept", "--inetd", "--stop-timeout", "300ms"])
        .args([
            "-l",
            "127.0.0.1:0",
            "--",
            "sh",
            "-c",
            "trap '' TERM; exec cat",
        ])
        .start();
    sockhold.wait_for("accepting connections");
    let address = sockhold.tcp_address(0);
    let _held = hold(address, None);
    sockhold.signal(nix::sys::signal::Signal::SIGTERM);
    sockhold.wait_for("1 connection children did not stop within 300ms: SIGKILL");
    sockhold.exits_with(137);
}

#[test]
fn hup_in_accept_mode_reloads_nothing_and_each_connection_runs_the_command_afresh() {
    let dir = TempDir::new();
    let handler = dir.join("handler");
    write_executable(&handler, "#!/bin/sh\necho one\n");
    let sockhold = Sockhold::command()
        .args(["--accept", "--inetd", "-l", "127.0.0.1:0", "--"])
        .arg(&handler)
        .start();
    sockhold.wait_for("accepting connections");
    let address = sockhold.tcp_address(0);
    assert_eq!(request_tcp(address).unwrap(), "one\n");
    // A new version of the program: the next connection runs it.
    let replacement = dir.join("handler.new");
    write_executable(&replacement, "#!/bin/sh\necho two\n");
    std::fs::rename(&replacement, &handler).unwrap();
    assert_eq!(request_tcp(address).unwrap(), "two\n");
    sockhold.signal(nix::sys::signal::Signal::SIGHUP);
    sockhold.wait_for("reload: nothing to reload in --accept mode");
    assert_eq!(request_tcp(address).unwrap(), "two\n");
    // The program gone: the connection is closed, sockhold serves on.
    std::fs::remove_file(&handler).unwrap();
    assert_closed_without_answer(TcpStream::connect(address).unwrap());
    sockhold.wait_for("connection from 127.0.0.1 closed: cannot execute");
    write_executable(&handler, "#!/bin/sh\necho three\n");
    assert_eq!(request_tcp(address).unwrap(), "three\n");
}

#[test]
fn lazy_starts_nothing_until_a_connection_then_serves_it_and_starts_again_after_the_exit() {
    let sockhold = Sockhold::command()
        .args(["--lazy", "-l", "127.0.0.1:0", "--", test_child_bin()])
        .args(["--exit-after", "300", "--exit-code", "0"])
        .start();
    sockhold.wait_for("waiting for a connection to start generation 1 (--lazy)");
    assert!(
        sockhold
            .wait_for_within("started: pid", Duration::from_millis(300))
            .is_none(),
        "a child started without a connection"
    );
    assert!(children_of(sockhold.pid).0.is_empty());

    // The connection waits in the queue while the child starts, and the
    // child answers it.
    let address = sockhold.tcp_address(0);
    let first = answer_pid(&request_tcp(address).unwrap());
    sockhold.wait_for("generation 1 started");
    sockhold.wait_for("generation 1 ended with status 0; waiting for a connection (--lazy)");
    assert!(children_of(sockhold.pid).0.is_empty());

    let second = answer_pid(&request_tcp(address).unwrap());
    assert_ne!(first, second);
    sockhold.wait_for("generation 2 started");
}

#[test]
fn max_rate_spaces_children_out_and_serves_every_connection() {
    let sockhold = Sockhold::command()
        .args(["--accept", "--inetd", "--max-rate", "2"])
        .args(["-l", "127.0.0.1:0", "--", "cat"])
        .start();
    sockhold.wait_for("accepting connections");
    let address = sockhold.tcp_address(0);
    let started = Instant::now();
    // A burst of two, then one every 500ms: the fourth cannot start before
    // 1s. (A lower bound only: a slow machine cannot make this fail.)
    for n in 0..4 {
        let line = format!("paced {n}\n");
        assert_eq!(echo_tcp(address, &line).unwrap(), line);
    }
    assert!(
        started.elapsed() >= Duration::from_millis(950),
        "4 children within {:?} at --max-rate 2",
        started.elapsed()
    );
}

/// Sets the soft RLIMIT_NOFILE of a running process (util-linux prlimit).
fn set_fd_limit(pid: Pid, limit: u64) {
    let status = std::process::Command::new("prlimit")
        .args(["--pid", &pid.to_string(), &format!("--nofile={limit}:")])
        .status()
        .expect("run prlimit (util-linux)");
    assert!(status.success(), "prlimit --nofile={limit}: {status}");
}

#[test]
fn out_of_fds_sockhold_waits_and_then_serves_the_queued_connection() {
    let sockhold = Sockhold::command()
        .args(["--accept", "--inetd", "-l", "127.0.0.1:0", "--", "cat"])
        .start();
    sockhold.wait_for("accepting connections");
    let address = sockhold.tcp_address(0);
    // No fd below the limit is free: accept(2) fails with EMFILE.
    let lowest_free = (0u64..)
        .find(|fd| std::fs::read_link(format!("/proc/{}/fd/{fd}", sockhold.pid)).is_err())
        .unwrap();
    set_fd_limit(sockhold.pid, lowest_free);
    let client = std::thread::spawn(move || echo_tcp(address, "queued\n"));
    sockhold.wait_for("cannot accept a connection: too many open files");
    assert!(sockhold.is_running());
    set_fd_limit(sockhold.pid, 1024);
    assert_eq!(client.join().unwrap().unwrap(), "queued\n");
}
