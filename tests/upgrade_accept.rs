//! `sockhold upgrade` in per-connection mode (`--accept`): the connections
//! open across it keep their children (still sockhold's) and their data,
//! none that arrives meanwhile is refused, the limits count on, and a
//! child that ends during the exec is reaped, logged and makes room.

use crate::harness::*;
use nix::unistd::Pid;
use std::io::{BufRead, BufReader, ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::os::fd::AsRawFd;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// Each connection's child says its pid, then echoes.
const PROGRAM: [&str; 3] = ["sh", "-c", "echo pid=$$; exec cat"];

/// A connection whose child is running (until it is dropped).
struct Held {
    stream: TcpStream,
    reader: BufReader<TcpStream>,
    /// Its child, as it said.
    pid: Pid,
}

impl Held {
    /// Connects (from `source`, a loopback address, if given) and waits
    /// for the child to say its pid.
    fn open(address: SocketAddr, source: Option<&str>) -> Held {
        let stream = connect_from(address, source);
        stream.set_read_timeout(Some(WAIT)).unwrap();
        let mut reader = BufReader::new(stream.try_clone().unwrap());
        let mut line = String::new();
        reader.read_line(&mut line).unwrap();
        let pid = line
            .trim()
            .strip_prefix("pid=")
            .and_then(|pid| pid.parse().ok())
            .unwrap_or_else(|| panic!("no pid in {line:?}"));
        Held {
            stream,
            reader,
            pid: Pid::from_raw(pid),
        }
    }

    /// Sends a line and asserts that it comes back.
    fn echo(&mut self, text: &str) {
        let line = format!("{text}\n");
        self.stream.write_all(line.as_bytes()).unwrap();
        let mut answer = String::new();
        self.reader.read_line(&mut answer).unwrap();
        assert_eq!(answer, line, "pid {}", self.pid);
    }
}

/// A TCP connection, from a chosen loopback address if given (127.0.0.2
/// is another source for --max-per-source).
fn connect_from(address: SocketAddr, source: Option<&str>) -> TcpStream {
    use nix::sys::socket::{self, AddressFamily, SockFlag, SockType, SockaddrIn};
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

/// One whole connection: the child's pid line and the echo of one line.
fn request(address: SocketAddr) -> std::io::Result<String> {
    let mut stream = TcpStream::connect_timeout(&address, Duration::from_secs(5))?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    stream.write_all(b"ping\n")?;
    stream.shutdown(Shutdown::Write)?;
    let mut answer = String::new();
    stream.read_to_string(&mut answer)?;
    if !answer.starts_with("pid=") || !answer.ends_with("\nping\n") {
        return Err(std::io::Error::other(format!("bad answer {answer:?}")));
    }
    Ok(answer)
}

fn start(args: &[&str], control: &Path) -> Sockhold {
    let sockhold = Sockhold::command()
        .args(["-v", "--accept", "--inetd", "-l", "127.0.0.1:0"])
        .args(args)
        .arg("--control")
        .arg(control)
        .arg("--")
        .args(PROGRAM)
        .start();
    sockhold.wait_for("accepting connections");
    sockhold
}

fn upgrade(sockhold: &Sockhold, control: &Path, exec: Option<&Path>) {
    let mut args = vec!["upgrade".to_string()];
    if let Some(exec) = exec {
        args.extend(["--exec".to_string(), exec.display().to_string()]);
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let (code, out, err) = control_client(&args, control);
    assert_eq!(code, 0, "{out} {err}; log:\n{}", sockhold.log_text());
    let binary = exec.map_or_else(|| sockhold_bin().to_string(), |p| p.display().to_string());
    assert_eq!(out, format!("upgraded: pid {} runs {binary}", sockhold.pid));
}

/// Waits (bounded) until `count` reaches `at_least`.
fn wait_for_count(count: &AtomicUsize, at_least: usize) {
    let deadline = Instant::now() + WAIT;
    while count.load(Ordering::SeqCst) < at_least {
        assert!(
            Instant::now() < deadline,
            "{} connections answered, waiting for {at_least}",
            count.load(Ordering::SeqCst)
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Asserts that `stream`'s connection is not served within 300ms (it
/// waits in the queue).
fn assert_waits(stream: &mut TcpStream) {
    let mut buffer = [0u8; 64];
    let waited = read_within(Duration::from_millis(300), |left| {
        stream.set_read_timeout(Some(left))?;
        stream.read(&mut buffer)
    });
    assert!(
        matches!(&waited, Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut)),
        "the connection must wait in the queue: {waited:?}"
    );
}

/// Asserts that the connection was closed without an answer.
fn assert_closed_without_answer(mut stream: TcpStream) {
    stream.set_read_timeout(Some(WAIT)).unwrap();
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

#[test]
fn held_connections_keep_their_children_across_an_upgrade_and_no_new_one_fails() {
    let dir = TempDir::new();
    let control = dir.join("c.sock");
    let mut sockhold = start(&[], &control);
    let address = sockhold.tcp_address(0);
    let mut held: Vec<Held> = (0..3).map(|_| Held::open(address, None)).collect();
    for connection in &mut held {
        connection.echo("before");
    }
    let answered = Arc::new(AtomicUsize::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let client = {
        let answered = Arc::clone(&answered);
        hammer(Arc::clone(&stop), move || {
            let result = request(address);
            if result.is_ok() {
                answered.fetch_add(1, Ordering::SeqCst);
            }
            result
        })
    };
    wait_for_count(&answered, 5);
    upgrade(&sockhold, &control, None);
    // The new binary counts the held connections' children (and those of
    // the hammer's that were running).
    let line = sockhold.wait_for("upgraded: pid");
    let (_, pids) = line.split_once("(pids ").expect("a pid list");
    let pids: Vec<&str> = pids.trim_end_matches(')').split(' ').collect();
    for connection in &held {
        assert!(
            pids.contains(&connection.pid.to_string().as_str()),
            "{} not carried: {line}",
            connection.pid
        );
    }
    // New connections are served by the new binary too.
    wait_for_count(&answered, answered.load(Ordering::SeqCst) + 5);
    stop_hammer(&stop, client);
    for connection in &mut held {
        connection.echo("after the upgrade");
        assert_eq!(
            parent_of(connection.pid),
            Some(sockhold.pid),
            "pid {}",
            connection.pid
        );
    }
    // One ends: the new binary reaps it and says so.
    let ended = held.pop().unwrap();
    let pid = ended.pid;
    drop(ended);
    sockhold.wait_for(&format!(
        "connection child pid {pid} from 127.0.0.1 exited with status 0"
    ));
    // The stop reaches the two children left, once the hammer's last ones
    // (which may close their connection before they are reaped) are gone.
    let deadline = Instant::now() + WAIT;
    loop {
        let log = sockhold.log_text();
        let started = log.matches("sockhold: debug: connection from ").count();
        let ended = log
            .matches("sockhold: debug: connection child pid ")
            .count();
        if started == ended + 2 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{started} started, {ended} ended: {log}"
        );
        sockhold.wait_for_within("connection child pid ", Duration::from_millis(100));
    }
    sockhold.signal(nix::sys::signal::Signal::SIGTERM);
    sockhold.wait_for("SIGTERM received: stopping; SIGTERM to 2 running connection children");
    for connection in held {
        let mut rest = Vec::new();
        let mut stream = connection.stream;
        let _ = stream.read_to_end(&mut rest);
        assert!(rest.is_empty(), "{rest:?}");
    }
    sockhold.exits_with(0);
}

#[test]
fn max_connections_counts_the_connections_held_across_an_upgrade() {
    let dir = TempDir::new();
    let control = dir.join("c.sock");
    let sockhold = start(&["--max-connections", "2"], &control);
    let address = sockhold.tcp_address(0);
    let mut held: Vec<Held> = (0..2).map(|_| Held::open(address, None)).collect();
    upgrade(&sockhold, &control, None);
    // Two running: the third waits in the queue, as before the upgrade.
    let mut third = TcpStream::connect(address).unwrap();
    third.write_all(b"third\n").unwrap();
    assert_waits(&mut third);
    for connection in &mut held {
        connection.echo("still here");
    }
    // One ends: the third is served.
    drop(held.pop());
    third.set_read_timeout(Some(WAIT)).unwrap();
    let mut reader = BufReader::new(&third);
    let mut line = String::new();
    reader.read_line(&mut line).unwrap();
    assert!(line.starts_with("pid="), "{line:?}");
    let mut echoed = String::new();
    reader.read_line(&mut echoed).unwrap();
    assert_eq!(echoed, "third\n");
    // And the limit still holds: a fourth waits.
    let mut fourth = TcpStream::connect(address).unwrap();
    assert_waits(&mut fourth);
    drop(third);
    let mut line = String::new();
    fourth.set_read_timeout(Some(WAIT)).unwrap();
    BufReader::new(&fourth).read_line(&mut line).unwrap();
    assert!(line.starts_with("pid="), "{line:?}");
}

#[test]
fn max_per_source_counts_the_connections_held_across_an_upgrade() {
    let dir = TempDir::new();
    let control = dir.join("c.sock");
    let sockhold = start(&["--max-per-source", "1"], &control);
    let address = sockhold.tcp_address(0);
    let first = Held::open(address, Some("127.0.0.1"));
    upgrade(&sockhold, &control, None);
    assert_closed_without_answer(connect_from(address, Some("127.0.0.1")));
    sockhold.wait_for(
        "connection from 127.0.0.1 closed: 1 already running from there (--max-per-source 1)",
    );
    // Another source is not affected.
    let mut other = Held::open(address, Some("127.0.0.2"));
    other.echo("other source");
    // Once the held one ends, its source may connect again.
    let pid = first.pid;
    drop(first);
    sockhold.wait_for(&format!("connection child pid {pid} from 127.0.0.1 exited"));
    let mut again = Held::open(address, Some("127.0.0.1"));
    again.echo("again");
}

/// A Unix connection whose child has said its pid.
fn open_unix(path: &Path) -> (std::os::unix::net::UnixStream, Pid) {
    let stream = std::os::unix::net::UnixStream::connect(path).unwrap();
    stream.set_read_timeout(Some(WAIT)).unwrap();
    let mut line = String::new();
    BufReader::new(&stream).read_line(&mut line).unwrap();
    let pid = line.trim().strip_prefix("pid=").expect("a pid line");
    (stream, Pid::from_raw(pid.parse().unwrap()))
}

#[test]
fn max_per_source_counts_a_unix_peer_by_uid_across_an_upgrade() {
    let dir = TempDir::new();
    let control = dir.join("c.sock");
    let path = dir.join("echo.sock");
    let sockhold = Sockhold::command()
        .args(["-v", "--accept", "--inetd", "--max-per-source", "1", "-l"])
        .arg(&path)
        .arg("--control")
        .arg(&control)
        .arg("--")
        .args(PROGRAM)
        .start();
    sockhold.wait_for("accepting connections");
    let (first, pid) = open_unix(&path);
    upgrade(&sockhold, &control, None);
    let uid = nix::unistd::getuid();
    let mut second = std::os::unix::net::UnixStream::connect(&path).unwrap();
    second.set_read_timeout(Some(WAIT)).unwrap();
    let mut answer = Vec::new();
    let _ = second.read_to_end(&mut answer);
    assert!(answer.is_empty(), "answered: {answer:?}");
    sockhold.wait_for(&format!(
        "connection from uid {uid} closed: 1 already running from there (--max-per-source 1)"
    ));
    drop(first);
    sockhold.wait_for(&format!("connection child pid {pid} from uid {uid} exited"));
    let (_again, again) = open_unix(&path);
    assert_eq!(parent_of(again), Some(sockhold.pid));
}

/// A stand-in for a new sockhold binary: executes sockhold, but first
/// (not for the probe) runs `before` (Perl), while no sockhold runs in
/// this pid, between the two binaries.
fn write_wrapper(path: &Path, before: &str) {
    let script = format!(
        r#"#!/usr/bin/perl
my $bin = "{bin}";
if (!$ENV{{SOCKHOLD_UPGRADE_PROBE}}) {{
{before}
}}
exec {{ $bin }} $bin, @ARGV or die "exec $bin: $!";
"#,
        bin = sockhold_bin(),
    );
    write_executable(path, &script);
}

/// Perl: ends the process whose pid is in the file `victim` with SIGTERM
/// and waits until it is a zombie, not reaped.
fn end_victim(victim: &Path) -> String {
    format!(
        r#"    open(my $f, '<', "{victim}") or die "{victim}: $!";
    my $pid = <$f>;
    chomp $pid;
    close($f);
    kill 'TERM', $pid or die "kill $pid: $!";
    for (1 .. 4000) {{
        open(my $s, '<', "/proc/$pid/stat") or last;
        my $stat = <$s>;
        close($s);
        last if $stat =~ /\) Z /;
        select(undef, undef, undef, 0.005);
    }}"#,
        victim = victim.display()
    )
}

#[test]
fn a_connection_child_that_ends_during_the_upgrade_is_reaped_logged_and_makes_room() {
    let dir = TempDir::new();
    let control = dir.join("c.sock");
    let victim_file = dir.join("victim");
    let wrapper = dir.join("sockhold-wrapper");
    write_wrapper(&wrapper, &end_victim(&victim_file));
    let sockhold = start(&["--max-connections", "2"], &control);
    let address = sockhold.tcp_address(0);
    let victim = Held::open(address, None);
    let mut other = Held::open(address, None);
    std::fs::write(&victim_file, victim.pid.to_string()).unwrap();
    upgrade(&sockhold, &control, Some(&wrapper));
    let exited = sockhold.wait_for(&format!(
        "connection child pid {} from 127.0.0.1 exited with signal SIGTERM",
        victim.pid
    ));
    // It ended before the new binary ran, which reaped it after taking over.
    let log = sockhold.log_text();
    let upgraded = log.find("upgraded: pid").expect("the upgraded line");
    assert!(log.find(&exited).unwrap() > upgraded, "{log}");
    assert!(
        parent_of(victim.pid).is_none(),
        "pid {} not reaped",
        victim.pid
    );
    let mut stream = victim.stream;
    let mut rest = Vec::new();
    let _ = stream.read_to_end(&mut rest);
    assert!(rest.is_empty());
    // Its place is free: with --max-connections 2, one more is served.
    other.echo("after");
    let mut third = Held::open(address, None);
    third.echo("in the freed place");
    assert_eq!(parent_of(third.pid), Some(sockhold.pid));
}

#[test]
fn a_new_binary_that_cannot_take_over_gives_the_connections_back_to_the_old_one() {
    let dir = TempDir::new();
    let control = dir.join("c.sock");
    // Newer sockholds that read the arguments differently: one finds
    // --max-connections without --accept (a usage error), the other
    // finds no --accept mode at all.
    let unparsed = dir.join("sockhold-unparsed");
    write_wrapper(
        &unparsed,
        "    @ARGV = grep { $_ ne '--accept' && $_ ne '--inetd' } @ARGV;",
    );
    let other_mode = dir.join("sockhold-other-mode");
    write_wrapper(
        &other_mode,
        "    @ARGV = grep { !/^(--accept|--inetd|--max-connections|2)$/ } @ARGV;",
    );
    let sockhold = start(&["--max-connections", "2"], &control);
    let address = sockhold.tcp_address(0);
    let mut held: Vec<Held> = (0..2).map(|_| Held::open(address, None)).collect();
    for (wrapper, reason) in [
        (
            &unparsed,
            "the arguments do not parse: the following required arguments were not provided: --accept",
        ),
        (
            &other_mode,
            "the state carries --accept's connection children, the arguments do not have --accept",
        ),
    ] {
        let (code, out, err) =
            control_client(&["upgrade", "--exec", wrapper.to_str().unwrap()], &control);
        assert_eq!(code, 1, "{out} {err}");
        assert!(
            err.contains(&format!("{reason} (the old binary serves on")),
            "{err}"
        );
        sockhold.wait_for(&format!(
            "runs {} again; holding 1 sockets, 2 connection children",
            sockhold_bin()
        ));
    }
    for connection in &mut held {
        connection.echo("back with the old binary");
        assert_eq!(parent_of(connection.pid), Some(sockhold.pid));
    }
    // Still counted: the third waits until one of the two ends.
    let mut third = TcpStream::connect(address).unwrap();
    assert_waits(&mut third);
    drop(held.pop());
    let mut line = String::new();
    third.set_read_timeout(Some(WAIT)).unwrap();
    BufReader::new(&third).read_line(&mut line).unwrap();
    assert!(line.starts_with("pid="), "{line:?}");
}

#[test]
fn twenty_upgrades_in_accept_mode_leak_no_fd() {
    let dir = TempDir::new();
    let control = dir.join("c.sock");
    let sockhold = start(&["--max-connections", "4"], &control);
    let address = sockhold.tcp_address(0);
    let mut held: Vec<Held> = (0..2).map(|_| Held::open(address, None)).collect();
    upgrade(&sockhold, &control, None);
    let fds = fd_count(sockhold.pid);
    for n in 0..20 {
        upgrade(&sockhold, &control, None);
        assert_eq!(fd_count(sockhold.pid), fds, "after upgrade {}", n + 2);
    }
    for connection in &mut held {
        connection.echo("after 21 upgrades");
        assert_eq!(parent_of(connection.pid), Some(sockhold.pid));
    }
    assert!(request(address).is_ok());
}

#[test]
fn an_upgrade_while_accept_mode_stops_or_without_its_command_is_refused() {
    let dir = TempDir::new();
    let control = dir.join("c.sock");
    // The command as a file that can go away.
    let program = dir.join("echo-server");
    write_executable(&program, "#!/bin/sh\ntrap '' TERM\necho pid=$$\nexec cat\n");
    let hidden = dir.join("echo-server.hidden");
    let mut sockhold = Sockhold::command()
        .args(["-v", "--accept", "--inetd", "-l", "127.0.0.1:0"])
        .args(["--stop-timeout", "20s", "--control"])
        .arg(&control)
        .arg("--")
        .arg(&program)
        .start();
    sockhold.wait_for("accepting connections");
    let address = sockhold.tcp_address(0);
    let mut held = Held::open(address, None);
    std::fs::rename(&program, &hidden).unwrap();
    let (code, _, err) = control_client(&["upgrade"], &control);
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains(&format!(
            "cannot run '{}': command not found",
            program.display()
        )),
        "{err}"
    );
    held.echo("the old binary serves on");
    std::fs::rename(&hidden, &program).unwrap();
    // Stopping: the child ignores SIGTERM, so the stop lasts.
    sockhold.signal(nix::sys::signal::Signal::SIGTERM);
    sockhold.wait_for("SIGTERM to 1 running connection children");
    let (code, _, err) = control_client(&["upgrade"], &control);
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("sockhold is stopping (1 connection children left); it exits once they have"),
        "{err}"
    );
    // The connection ends, so does its child, so does sockhold.
    held.echo("still served while stopping");
    drop(held);
    sockhold.exits_with(0);
}

#[test]
fn a_command_that_vanishes_during_the_upgrade_closes_connections_until_it_is_back() {
    let dir = TempDir::new();
    let control = dir.join("c.sock");
    let program = dir.join("echo-server");
    write_executable(&program, "#!/bin/sh\necho pid=$$\nexec cat\n");
    let hidden = dir.join("echo-server.hidden");
    let wrapper = dir.join("sockhold-wrapper");
    write_wrapper(
        &wrapper,
        &format!(
            r#"    rename("{}", "{}") or die "rename: $!";"#,
            program.display(),
            hidden.display()
        ),
    );
    let sockhold = Sockhold::command()
        .args([
            "-v",
            "--accept",
            "--inetd",
            "-l",
            "127.0.0.1:0",
            "--control",
        ])
        .arg(&control)
        .arg("--")
        .arg(&program)
        .start();
    sockhold.wait_for("accepting connections");
    let address = sockhold.tcp_address(0);
    let mut held = Held::open(address, None);
    upgrade(&sockhold, &control, Some(&wrapper));
    sockhold.wait_for(&format!(
        "error: cannot run '{}': command not found (check the name, or give a path); each connection is closed until it can be run",
        program.display()
    ));
    held.echo("carried all the same");
    assert_eq!(parent_of(held.pid), Some(sockhold.pid));
    assert_closed_without_answer(TcpStream::connect(address).unwrap());
    sockhold.wait_for("connection from 127.0.0.1 closed: cannot execute");
    std::fs::rename(&hidden, &program).unwrap();
    let mut again = Held::open(address, None);
    again.echo("the command is back");
}

#[test]
fn under_a_service_manager_an_accept_mode_upgrade_is_reloading_then_ready_once() {
    let dir = TempDir::new();
    let control = dir.join("c.sock");
    let notify = FakeNotify::bind(&dir.join("notify"));
    let mut sockhold = Sockhold::command()
        .env("NOTIFY_SOCKET", dir.join("notify"))
        .args(["--accept", "--inetd", "-l", "127.0.0.1:0", "--control"])
        .arg(&control)
        .arg("--")
        .args(PROGRAM)
        .start();
    assert_eq!(notify.next(), "READY=1\nSTATUS=waiting for connections");
    let _held = Held::open(sockhold.tcp_address(0), None);
    upgrade(&sockhold, &control, None);
    let reloading = notify.next();
    assert!(
        reloading.starts_with("RELOADING=1\nMONOTONIC_USEC=")
            && reloading.ends_with("\nSTATUS=upgrading sockhold"),
        "{reloading}"
    );
    assert_eq!(notify.next(), "READY=1\nSTATUS=waiting for connections");
    // Nothing more until the stop: READY=1 came once.
    sockhold.signal(nix::sys::signal::Signal::SIGTERM);
    assert_eq!(notify.next(), "STOPPING=1\nSTATUS=stopping");
    sockhold.exits_with(0);
}
