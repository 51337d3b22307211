//! Datagram sockets (`udp:…`, `unix-dgram:…`, adopted ones): the child
//! finds them at fd 3.. with LISTEN_FDS/LISTEN_FDNAMES, in `-l` order with
//! stream sockets; `--lazy` starts the child on a datagram that the child
//! then reads; a reload loses no datagram; `--accept` and bad forms are
//! refused; Unix datagram socket files follow the stale/live rules.
//!
//! The child is a small Python server that answers every datagram (and
//! every stream connection) with one line describing itself and the socket.

use crate::harness::*;
use nix::sys::signal::Signal;
use std::collections::HashMap;
use std::net::{SocketAddr, UdpSocket};
use std::os::linux::net::SocketAddrExt;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::os::unix::net::{UnixDatagram, UnixListener};
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// Answers each datagram with `pid=… fd=… … received=N got=PAYLOAD`, where
/// N counts the datagrams this process has read, and each stream connection
/// with the same line. SIGTERM ends it between datagrams, never between
/// reading one and answering it; at exit it logs how many it read.
const CHILD: &str = r#"
import os, select, signal, socket, sys
pid = os.getpid()
count = int(os.environ["LISTEN_FDS"])
sockets = {3 + i: socket.socket(fileno=3 + i) for i in range(count)}
received = 0
idle = False
stopping = False

def on_term(signum, frame):
    global stopping
    stopping = True
    if idle:
        raise SystemExit(0)

signal.signal(signal.SIGTERM, on_term)

def describe(fd, sock, got):
    return "pid=%d fd=%d family=%s type=%s listen_fds=%s listen_pid_is_mine=%s names=%s ss=%s einhorn=%s received=%d got=%s\n" % (
        pid, fd, sock.family.name, sock.type.name, os.environ["LISTEN_FDS"],
        os.environ["LISTEN_PID"] == str(pid), os.environ["LISTEN_FDNAMES"],
        os.environ.get("SERVER_STARTER_PORT", "-") or "-",
        os.environ.get("EINHORN_FDS", "-").replace(" ", ",") or "-", received, got)

try:
    while not stopping:
        idle = True
        ready, _, _ = select.select(list(sockets.values()), [], [])
        idle = False
        for fd, sock in sockets.items():
            if sock not in ready:
                continue
            if sock.type == socket.SOCK_DGRAM:
                try:
                    # Another generation may have taken it since select.
                    data, peer = sock.recvfrom(65536, socket.MSG_DONTWAIT)
                except BlockingIOError:
                    continue
                received += 1
                sock.sendto(describe(fd, sock, data.decode()).encode(), peer)
            else:
                connection, _ = sock.accept()
                connection.sendall(describe(fd, sock, "-").encode())
                connection.close()
finally:
    print("datagram child %d received %d datagrams" % (pid, received), file=sys.stderr, flush=True)
"#;

fn child_command() -> [&'static str; 3] {
    ["python3", "-c", CHILD]
}

fn fields(answer: &str) -> HashMap<String, String> {
    answer
        .split_whitespace()
        .filter_map(|field| field.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// A name no other test (or test run) uses, for abstract sockets.
fn unique_abstract_name(what: &str) -> String {
    static COUNTER: AtomicUsize = AtomicUsize::new(0);
    format!(
        "sockhold-test-{}-{what}-{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::SeqCst)
    )
}

/// A log line containing `needle`, whether it was already seen or is
/// still to come.
fn log_line(sockhold: &Sockhold, needle: &str) -> String {
    let seen = sockhold
        .log
        .lock()
        .unwrap()
        .iter()
        .find(|line| line.contains(needle))
        .cloned();
    seen.unwrap_or_else(|| sockhold.wait_for(needle))
}

/// A UDP client on the loopback of `server`'s family.
fn udp_client(server: SocketAddr) -> UdpSocket {
    let local: SocketAddr = if server.is_ipv6() {
        "[::1]:0".parse().unwrap()
    } else {
        "127.0.0.1:0".parse().unwrap()
    };
    UdpSocket::bind(local).unwrap()
}

/// Sends one datagram and returns the answer; panics if none comes within
/// `WAIT` (the datagram was lost).
fn ask_udp(client: &UdpSocket, server: SocketAddr, payload: &str) -> String {
    client.send_to(payload.as_bytes(), server).unwrap();
    let mut buffer = [0u8; 4096];
    let length = read_within(WAIT, |left| {
        client.set_read_timeout(Some(left))?;
        client.recv(&mut buffer)
    })
    .unwrap_or_else(|error| panic!("no answer to {payload:?} from {server}: {error}"));
    String::from_utf8_lossy(&buffer[..length]).into_owned()
}

/// A Unix datagram client bound in `dir`, so that the child can answer.
fn unix_client(dir: &TempDir, name: &str) -> UnixDatagram {
    UnixDatagram::bind(dir.join(name)).unwrap()
}

fn receive(client: &UnixDatagram, payload: &str) -> String {
    let mut buffer = [0u8; 4096];
    let length = read_within(WAIT, |left| {
        client.set_read_timeout(Some(left))?;
        client.recv(&mut buffer)
    })
    .unwrap_or_else(|error| panic!("no answer to {payload:?}: {error}"));
    String::from_utf8_lossy(&buffer[..length]).into_owned()
}

fn ask_unix(client: &UnixDatagram, server: &Path, payload: &str) -> String {
    client.send_to(payload.as_bytes(), server).unwrap();
    receive(client, payload)
}

fn ask_abstract(client: &UnixDatagram, name: &str, payload: &str) -> String {
    let server = std::os::unix::net::SocketAddr::from_abstract_name(name).unwrap();
    client.send_to_addr(payload.as_bytes(), &server).unwrap();
    receive(client, payload)
}

#[test]
fn datagram_sockets_reach_the_child_at_fd_3_and_up_with_their_names() {
    let dir = TempDir::new();
    let path = dir.join("dgram.sock");
    let abstract_name = unique_abstract_name("names");
    let sockhold = Sockhold::command()
        .args(["-l", "udp:127.0.0.1:0", "-l", "dns6=udp:[::1]:0", "-l"])
        .arg(format!("unix-dgram:{}", path.display()))
        .args(["-l", &format!("log=unix-dgram:@{abstract_name}"), "--"])
        .args(child_command())
        .start();
    let v4 = sockhold.udp_address(0);
    let v6 = sockhold.udp_address(1);
    assert!(v4.ip().is_loopback() && v4.port() != 0, "{v4}");
    assert_eq!(v6.ip().to_string(), "::1");
    sockhold.wait_for("generation 1 started");
    let log = sockhold.log_text();
    for expected in [
        format!("listening on udp {v4} (fd 3, name fd3)"),
        format!("listening on udp {v6} (fd 4, name dns6)"),
        format!(
            "listening on unix-dgram {} (fd 5, name fd5)",
            path.display()
        ),
        format!("listening on unix-dgram @{abstract_name} (fd 6, name log)"),
    ] {
        assert!(log.contains(&expected), "no {expected:?} in log:\n{log}");
    }
    assert!(
        std::fs::symlink_metadata(&path)
            .unwrap()
            .file_type()
            .is_socket()
    );

    let unix = unix_client(&dir, "client.sock");
    let answers = [
        ask_udp(&udp_client(v4), v4, "hello-v4"),
        ask_udp(&udp_client(v6), v6, "hello-v6"),
        ask_unix(&unix, &path, "hello-path"),
        ask_abstract(&unix, &abstract_name, "hello-abstract"),
    ];
    let expected = [
        ("3", "AF_INET", "hello-v4"),
        ("4", "AF_INET6", "hello-v6"),
        ("5", "AF_UNIX", "hello-path"),
        ("6", "AF_UNIX", "hello-abstract"),
    ];
    for (answer, (fd, family, got)) in answers.iter().zip(expected) {
        let answer = fields(answer);
        assert_eq!(answer["fd"], fd, "{answer:?}");
        assert_eq!(answer["family"], family, "{answer:?}");
        assert_eq!(answer["type"], "SOCK_DGRAM", "{answer:?}");
        assert_eq!(answer["got"], got, "{answer:?}");
        assert_eq!(answer["listen_fds"], "4", "{answer:?}");
        assert_eq!(answer["listen_pid_is_mine"], "True", "{answer:?}");
        assert_eq!(answer["names"], "fd3:dns6:fd5:log", "{answer:?}");
    }
}

#[test]
fn stream_and_datagram_sockets_mix_in_command_line_order() {
    let dir = TempDir::new();
    let stream_path = dir.join("stream.sock");
    let dgram_path = dir.join("dgram.sock");
    let sockhold = Sockhold::command()
        .args(["-l", "127.0.0.1:0", "-l", "udp:127.0.0.1:0", "-l"])
        .arg(&stream_path)
        .arg("-l")
        .arg(format!("unix-dgram:{}", dgram_path.display()))
        .args(["-l", "udp:0", "--"])
        .args(child_command())
        .start();
    sockhold.wait_for("generation 1 started");
    let tcp = sockhold.tcp_address(0);
    let udp = sockhold.udp_address(0);
    let udp_all = sockhold.udp_address(1);
    let log = sockhold.log_text();
    for expected in [
        format!("listening on tcp {tcp} (fd 3, name fd3)"),
        format!("listening on udp {udp} (fd 4, name fd4)"),
        format!(
            "listening on unix {} (fd 5, name fd5)",
            stream_path.display()
        ),
        format!(
            "listening on unix-dgram {} (fd 6, name fd6)",
            dgram_path.display()
        ),
        format!("listening on udp {udp_all} (fd 7, name fd7)"),
    ] {
        assert!(log.contains(&expected), "no {expected:?} in log:\n{log}");
    }
    // A bare port is every address, dual-stack as for TCP.
    assert!(udp_all.ip().is_unspecified(), "{udp_all}");

    let unix = unix_client(&dir, "client.sock");
    let loopback_all = SocketAddr::from(([127, 0, 0, 1], udp_all.port()));
    let answers = [
        request_tcp(tcp).unwrap(),
        ask_udp(&udp_client(udp), udp, "to-udp"),
        request_unix(&stream_path).unwrap(),
        ask_unix(&unix, &dgram_path, "to-unix-dgram"),
        ask_udp(&udp_client(loopback_all), loopback_all, "to-udp-all"),
    ];
    let expected = [
        ("3", "SOCK_STREAM"),
        ("4", "SOCK_DGRAM"),
        ("5", "SOCK_STREAM"),
        ("6", "SOCK_DGRAM"),
        ("7", "SOCK_DGRAM"),
    ];
    for (answer, (fd, kind)) in answers.iter().zip(expected) {
        let answer = fields(answer);
        assert_eq!((answer["fd"].as_str(), answer["type"].as_str()), (fd, kind));
        assert_eq!(answer["listen_fds"], "5", "{answer:?}");
        assert_eq!(answer["names"], "fd3:fd4:fd5:fd6:fd7", "{answer:?}");
    }
}

#[test]
fn lazy_starts_the_child_on_a_datagram_which_the_child_then_reads() {
    let sockhold = Sockhold::command()
        .args(["--lazy", "-l", "udp:127.0.0.1:0", "--"])
        .args(child_command())
        .start();
    sockhold.wait_for("waiting for a connection to start generation 1 (--lazy)");
    assert!(
        sockhold
            .wait_for_within("started: pid", Duration::from_millis(300))
            .is_none(),
        "a child started without a datagram"
    );
    let server = sockhold.udp_address(0);
    // Sent while no child runs: the kernel queues it, sockhold sees the
    // socket readable and starts the child, and the child reads it.
    let answer = fields(&ask_udp(&udp_client(server), server, "first"));
    let started = sockhold.wait_for("generation 1 started: pid");
    assert!(
        started.ends_with(&format!("pid {}", answer["pid"])),
        "{started}"
    );
    assert_eq!(answer["got"], "first");
    assert_eq!(answer["received"], "1");
}

#[test]
fn reload_loses_no_datagram() {
    let sockhold = Sockhold::command()
        .args(["--ready", "300ms", "-l", "udp:127.0.0.1:0", "--"])
        .args(child_command())
        .start();
    sockhold.wait_for("generation 1 ready");
    let server = sockhold.udp_address(0);
    let client = udp_client(server);
    // One datagram at a time, each answered before the next is sent: an
    // answer that never comes is a lost datagram, and each answer names
    // the process that read it.
    let mut answered_by: HashMap<i32, usize> = HashMap::new();
    let mut sent = 0;
    let mut ask = || {
        let payload = format!("n{sent}");
        let answer = fields(&ask_udp(&client, server, &payload));
        assert_eq!(answer["got"], payload, "an answer to another datagram");
        sent += 1;
        let pid: i32 = answer["pid"].parse().unwrap();
        *answered_by.entry(pid).or_default() += 1;
        pid
    };

    let first: Vec<i32> = (0..50).map(|_| ask()).collect();
    sockhold.signal(Signal::SIGHUP);
    // Throughout the reload, until generation 1 is gone (each round is a
    // datagram answered, so this waits, it does not spin; bounded, so that
    // a reload that never ends fails the test rather than hanging it).
    let mut during_reload = 0;
    let deadline = Instant::now() + WAIT;
    while !sockhold.log_text().contains("generation 1 exited") {
        assert!(
            Instant::now() < deadline,
            "generation 1 did not exit within {WAIT:?} of the reload; log:\n{}",
            sockhold.log_text()
        );
        ask();
        during_reload += 1;
    }
    let last: Vec<i32> = (0..50).map(|_| ask()).collect();

    let generations = sockhold.child_pids();
    assert_eq!(generations.len(), 2, "{}", sockhold.log_text());
    let (old, new) = (generations[0].as_raw(), generations[1].as_raw());
    assert!(first.iter().all(|pid| *pid == old), "{first:?}");
    assert!(last.iter().all(|pid| *pid == new), "{last:?}");
    assert!(during_reload > 0);

    // Each generation's own count of what it read adds up to what was
    // sent: nothing read and left unanswered, nothing lost.
    let mut sockhold = sockhold;
    sockhold.signal(Signal::SIGTERM);
    assert_eq!(sockhold.wait_exit().code(), Some(0));
    let mut total = 0;
    for pid in [old, new] {
        let line = log_line(&sockhold, &format!("datagram child {pid} received "));
        let count: usize = line
            .split("received ")
            .nth(1)
            .and_then(|rest| rest.split(' ').next())
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("{line}"));
        assert_eq!(count, answered_by[&pid], "{line}");
        total += count;
    }
    assert_eq!(total, sent);
}

/// Runs sockhold, expects it to fail at once with `code`, and returns its
/// one error line.
fn fails_with(code: i32, args: &[&str]) -> String {
    let (got, log) = run_to_exit(args);
    assert_eq!(got, code, "exit status for {args:?}; log:\n{log}");
    let errors: Vec<&str> = log
        .lines()
        .filter(|l| l.starts_with("sockhold: error: "))
        .collect();
    assert_eq!(errors.len(), 1, "one error line for {args:?}; log:\n{log}");
    errors[0].to_string()
}

#[test]
fn accept_with_a_datagram_socket_is_a_usage_error() {
    let line = fails_with(
        64,
        &[
            "--accept",
            "-l",
            "7000",
            "-l",
            "udp:127.0.0.1:0",
            "--",
            "cat",
        ],
    );
    assert_eq!(
        line,
        "sockhold: error: cannot use --accept with 'udp:127.0.0.1:0': a datagram socket has no connections to accept (drop --accept: the command then gets the socket and reads the datagrams itself; --lazy starts it on the first datagram)"
    );
    let dir = TempDir::new();
    let path = dir.join("never.sock");
    let text = format!("unix-dgram:{}", path.display());
    let line = fails_with(64, &["--accept", "-l", &text, "--", "cat"]);
    assert!(
        line.contains(&format!("cannot use --accept with '{text}'")),
        "{line}"
    );
    assert!(!path.exists(), "refused before anything was bound");
}

#[test]
fn bad_datagram_forms_are_usage_errors() {
    let udp_forms =
        "(write udp:PORT, udp:IP:PORT or udp:[IPv6]:PORT, e.g. udp:5353 or udp:127.0.0.1:5353)";
    let cases = [
        ("udp:", format!("missing port after 'udp:' {udp_forms}")),
        ("udp:70000", "port out of range".to_string()),
        ("udp:127.0.0.1", format!("missing port {udp_forms}")),
        (
            "udp:localhost:53",
            format!("'localhost' is not an IP address (host names are not resolved) {udp_forms}"),
        ),
        (
            "udp:::1:53",
            format!("IPv6 address without brackets {udp_forms}"),
        ),
        (
            "udp:/run/log.sock",
            "udp: takes a port or IP:PORT, not a Unix socket (for a Unix datagram socket write unix-dgram:PATH or unix-dgram:@name)".to_string(),
        ),
        (
            "unix-dgram:",
            "missing path after 'unix-dgram:' (write unix-dgram:PATH or unix-dgram:@name)"
                .to_string(),
        ),
        (
            "unix-dgram:@",
            "empty abstract socket name (write @name)".to_string(),
        ),
    ];
    for (text, reason) in cases {
        let line = fails_with(64, &["-l", text, "--", "true"]);
        assert!(
            line.starts_with(&format!(
                "sockhold: error: invalid value '{text}' for '--listen <ADDR>': {reason}"
            )),
            "{text}: {line}"
        );
    }
}

#[test]
fn stale_unix_datagram_file_is_replaced_with_its_mode_and_removed_at_exit() {
    let dir = TempDir::new();
    let path = dir.join("stale.sock");
    drop(UnixDatagram::bind(&path).unwrap());
    assert!(path.exists(), "a closed socket leaves its file behind");
    let mut sockhold = Sockhold::command()
        .args(["--socket-mode", "600", "-l"])
        .arg(format!("unix-dgram:{}", path.display()))
        .arg("--")
        .args(child_command())
        .start();
    sockhold.wait_for("removing stale socket file");
    sockhold.wait_for("generation 1 started");
    let meta = std::fs::symlink_metadata(&path).unwrap();
    assert!(meta.file_type().is_socket());
    assert_eq!(meta.permissions().mode() & 0o777, 0o600);
    let answer = fields(&ask_unix(&unix_client(&dir, "c.sock"), &path, "x"));
    assert_eq!(answer["type"], "SOCK_DGRAM");
    sockhold.signal(Signal::SIGTERM);
    assert_eq!(sockhold.wait_exit().code(), Some(0));
    assert!(!path.exists(), "socket file removed at exit");
}

#[test]
fn live_socket_of_either_type_is_refused_and_left_alone() {
    let dir = TempDir::new();
    let datagram_path = dir.join("live-dgram.sock");
    let live_datagram = UnixDatagram::bind(&datagram_path).unwrap();
    let stream_path = dir.join("live-stream.sock");
    let _live_stream = UnixListener::bind(&stream_path).unwrap();
    for (path, text) in [
        (
            &datagram_path,
            format!("unix-dgram:{}", datagram_path.display()),
        ),
        (
            &stream_path,
            format!("unix-dgram:{}", stream_path.display()),
        ),
        // A stream socket wanted where a datagram socket lives.
        (&datagram_path, datagram_path.display().to_string()),
    ] {
        let line = fails_with(71, &["-l", &text, "--", "true"]);
        assert_eq!(
            line,
            format!(
                "sockhold: error: cannot listen on '{text}': already in use by another process (stop it, or choose another path)"
            )
        );
        assert!(path.exists());
    }
    // The live socket still gets its datagrams.
    let sender = UnixDatagram::unbound().unwrap();
    sender.send_to(b"still mine", &datagram_path).unwrap();
    let mut buffer = [0u8; 16];
    let length = read_within(WAIT, |left| {
        live_datagram.set_read_timeout(Some(left))?;
        live_datagram.recv(&mut buffer)
    })
    .unwrap();
    assert_eq!(&buffer[..length], b"still mine");
}

#[test]
#[ignore = "needs root"] // to give a file away
fn unix_datagram_file_gets_its_owner_and_mode() {
    needs_root();
    use std::os::linux::fs::MetadataExt;
    let dir = TempDir::new();
    let path = dir.join("owned.sock");
    let sockhold = Sockhold::command()
        .arg("-l")
        .arg(format!("unix-dgram:{}", path.display()))
        .args(["--socket-owner", "nobody:nogroup", "--socket-mode", "620"])
        .arg("--")
        .args(child_command())
        .start();
    sockhold.wait_for("generation 1 started");
    let meta = std::fs::symlink_metadata(&path).unwrap();
    assert_eq!((meta.st_uid(), meta.st_gid()), (65534, 65534));
    assert_eq!(meta.permissions().mode() & 0o777, 0o620);
}

/// `python3 -c LAUNCHER SOCKHOLD ARGS...`: puts a UDP socket on fd 3
/// (bound to 127.0.0.1:0 when `bound`) and execs sockhold with it.
fn launched_with_udp_fd_3(bound: bool) -> crate::harness::Builder {
    let bind = if bound {
        "s.bind(('127.0.0.1', 0))"
    } else {
        "pass"
    };
    let launcher = format!(
        "import os, socket, sys\n\
         s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n\
         {bind}\n\
         os.dup2(s.fileno(), 3)\n\
         os.set_inheritable(3, True)\n\
         os.execv(sys.argv[1], sys.argv[1:])"
    );
    Sockhold::launched_by(&["python3", "-c", &launcher])
}

#[test]
fn inherited_datagram_socket_is_adopted_and_an_unbound_one_refused() {
    let sockhold = launched_with_udp_fd_3(true)
        .args(["-l", "fd:3", "--"])
        .args(child_command())
        .start();
    let line = sockhold.wait_for("listening on inherited fd 3");
    let server: SocketAddr = line
        .split("(udp ")
        .nth(1)
        .and_then(|rest| rest.split(')').next())
        .and_then(|address| address.parse().ok())
        .unwrap_or_else(|| panic!("{line}"));
    assert!(line.ends_with("(fd 3, name fd3)"), "{line}");
    let answer = fields(&ask_udp(&udp_client(server), server, "adopted"));
    assert_eq!(answer["fd"], "3");
    assert_eq!(answer["type"], "SOCK_DGRAM");
    assert_eq!(answer["got"], "adopted");

    let mut unbound = launched_with_udp_fd_3(false)
        .args(["-l", "fd:3", "--", "true"])
        .start();
    assert_eq!(unbound.wait_exit().code(), Some(64));
    let log = unbound.log_text();
    assert!(
        log.contains("sockhold: error: cannot adopt 'fd:3': the datagram socket is not bound to an address (pass a listening stream socket or a bound datagram socket on that fd)"),
        "{log}"
    );

    let mut accepting = launched_with_udp_fd_3(true)
        .args(["--accept", "-l", "fd:3", "--", "cat"])
        .start();
    assert_eq!(accepting.wait_exit().code(), Some(64));
    let log = accepting.log_text();
    assert!(
        log.contains("sockhold: error: cannot use --accept with 'fd:3': a datagram socket has no connections to accept"),
        "{log}"
    );
}

#[test]
fn datagram_socket_passed_by_the_service_manager_is_adopted() {
    let dir = TempDir::new();
    let path = dir.join("activated.sock");
    // systemd-socket-activate --datagram execs sockhold once a datagram is
    // waiting; it stays queued for sockhold's child to read.
    let sockhold = Sockhold::launched_by(&[
        "systemd-socket-activate",
        "--datagram",
        "--fdname=logs",
        "-l",
        path.to_str().unwrap(),
    ])
    .args(["-l", "udp:127.0.0.1:0", "--"])
    .args(child_command())
    .start();
    sockhold.wait_for("Listening on");
    let answer = fields(&ask_unix(&unix_client(&dir, "c.sock"), &path, "wake"));
    assert_eq!(answer["fd"], "3");
    assert_eq!(answer["type"], "SOCK_DGRAM");
    assert_eq!(answer["got"], "wake");
    assert_eq!(answer["listen_fds"], "2");
    assert_eq!(answer["names"], "logs:fd4");
    let adopted = log_line(&sockhold, "listening on inherited fd 3");
    assert!(
        adopted.contains(&format!("(unix-dgram {})", path.display()))
            && adopted.contains("name logs"),
        "{adopted}"
    );
}

#[test]
fn status_shows_datagram_sockets_with_their_real_addresses() {
    let dir = TempDir::new();
    let control = dir.join("ctl");
    let path = dir.join("d.sock");
    let abstract_name = unique_abstract_name("status");
    let sockhold = Sockhold::command()
        .arg("--control")
        .arg(&control)
        .args(["-l", "udp:127.0.0.1:0", "-l"])
        .arg(format!("unix-dgram:{}", path.display()))
        .args(["-l", &format!("unix-dgram:@{abstract_name}"), "--"])
        .args(child_command())
        .start();
    sockhold.wait_for("generation 1 started");
    let udp = sockhold.udp_address(0);
    let output = Command::new(sockhold_bin())
        .arg("status")
        .arg("--control")
        .arg(&control)
        .output()
        .unwrap();
    assert!(output.status.success(), "{output:?}");
    let check = Command::new("python3")
        .args([
            "-c",
            "import json, sys\n\
             print('|'.join(s['address'] for s in json.loads(sys.argv[1])['sockets']))",
            &String::from_utf8_lossy(&output.stdout),
        ])
        .output()
        .unwrap();
    assert!(check.status.success(), "{check:?}");
    assert_eq!(
        String::from_utf8_lossy(&check.stdout).trim(),
        format!(
            "udp {udp}|unix-dgram {}|unix-dgram @{abstract_name}",
            path.display()
        )
    );
}

#[test]
fn compat_env_leaves_datagram_sockets_out() {
    let sockhold = Sockhold::command()
        .args(["-l", "udp:127.0.0.1:0", "-l", "127.0.0.1:0"])
        .args(["--compat-env", "server-starter,einhorn", "--"])
        .args(child_command())
        .start();
    sockhold.wait_for("generation 1 started");
    let tcp = sockhold.tcp_address(0);
    let udp = sockhold.udp_address(0);
    let skipped = log_line(&sockhold, "--compat-env leaves out");
    assert!(skipped.contains(&format!("udp {udp}")), "{skipped}");
    let answer = fields(&ask_udp(&udp_client(udp), udp, "compat"));
    assert_eq!(answer["ss"], format!("{tcp}=4"));
    assert_eq!(answer["einhorn"], "4");
    assert_eq!(answer["listen_fds"], "2");
}
