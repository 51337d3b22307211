//! `--intercept-bind`: real, unmodified servers that bind their own
//! address (and know nothing of LISTEN_FDS) get sockhold's held socket in
//! place of their own, so they serve and reload with no refused
//! connection; a port sockhold does not hold is bound for real.
//!
//! sockhold's port is chosen by the kernel (`-l 127.0.0.1:0`); the server
//! learns it the way a user's script would, from `--compat-env
//! server-starter` (SERVER_STARTER_PORT=127.0.0.1:PORT=3), through `sh`.

use crate::harness::*;
use nix::sys::signal::Signal;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

fn server(script: &str) -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/support/servers")
        .join(script)
        .to_str()
        .unwrap()
        .to_string()
}

/// `sh -c` that runs `command` with `$PORT` set to sockhold's TCP port.
fn with_port(command: &str) -> Vec<String> {
    vec![
        "sh".to_string(),
        "-c".to_string(),
        format!("p=${{SERVER_STARTER_PORT%%=*}}; PORT=${{p##*:}}; exec {command}"),
    ]
}

/// sockhold holding `listen`, running `command` with --intercept-bind.
fn start(listen: &[&str], command: &[String]) -> Sockhold {
    start_with(listen, &[], command)
}

fn start_with(listen: &[&str], options: &[&str], command: &[String]) -> Sockhold {
    let mut builder = Sockhold::command().args(options);
    for address in listen {
        builder = builder.args(["-l", address]);
    }
    builder
        .args([
            "--intercept-bind",
            "--compat-env",
            "server-starter",
            "--ready-timeout",
            "30s",
            "--",
        ])
        .args(command)
        .start()
}

/// What a server does with the request it is answering when it is told
/// to stop.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Stop {
    /// Finishes it: no request may fail.
    Graceful,
    /// Dies with it (python3 -m http.server has no graceful stop): a
    /// request in flight at each stop may be cut off, but none may be
    /// refused, as none would be if sockhold ever closed the held socket.
    CutsOff,
}

/// Reloads `times` times while `request` is made over and over; asserts
/// that every request was answered (see `Stop`) and, where answers carry
/// a pid, that several generations answered.
fn reloads_under_load<F>(sockhold: &Sockhold, times: u64, stop_kind: Stop, request: F)
where
    F: Fn() -> std::io::Result<String> + Send + 'static,
{
    let stop = Arc::new(AtomicBool::new(false));
    let client = {
        let stop = Arc::clone(&stop);
        std::thread::spawn(move || {
            let (mut answered, mut failures, mut pids) = (0, Vec::new(), Vec::new());
            while !stop.load(Ordering::SeqCst) {
                match request() {
                    Ok(answer) => {
                        answered += 1;
                        if let Some(pid) = answer
                            .split_whitespace()
                            .find_map(|field| field.strip_prefix("pid="))
                        {
                            if !pids.contains(&pid.to_string()) {
                                pids.push(pid.to_string());
                            }
                        }
                    }
                    Err(error) => failures.push(error.to_string()),
                }
            }
            (answered, failures, pids)
        })
    };
    for generation in 2..=1 + times {
        sockhold.signal(Signal::SIGHUP);
        sockhold.wait_for(&format!("generation {generation} ready"));
        sockhold.wait_for(&format!("generation {} exited", generation - 1));
    }
    stop.store(true, Ordering::SeqCst);
    let (answered, failures, pids) = client.join().unwrap();
    let pids_expected = stop_kind == Stop::Graceful;
    let refused = |failure: &&String| failure.contains("refused") || failure.contains("timed out");
    let allowed = match stop_kind {
        Stop::Graceful => 0,
        Stop::CutsOff if failures.iter().any(|f| refused(&f)) => 0,
        Stop::CutsOff => times as usize,
    };
    assert!(
        failures.len() <= allowed,
        "{} failed connections: {:?}; log:\n{}",
        failures.len(),
        &failures[..failures.len().min(5)],
        sockhold.log_text()
    );
    assert!(answered > 10, "only {answered} answers");
    if pids_expected {
        assert!(
            pids.len() >= 3,
            "only {} distinct pids answered",
            pids.len()
        );
    }
}

#[test]
fn http_server_binding_the_held_port_serves_and_reloads_without_a_refusal() {
    // http.server dies at once of SIGTERM, cutting off the request it is
    // answering; on SIGINT it leaves its loop and exits (its KeyboardInterrupt).
    let sockhold = start_with(
        &["127.0.0.1:0"],
        &["--stop-signal", "INT", "--backlog", "300"],
        &with_port("python3 -m http.server \"$PORT\" --bind 127.0.0.1"),
    );
    let line = sockhold.wait_for("bind 127.0.0.1:");
    let address = sockhold.tcp_address(0);
    assert!(
        line.contains(&format!(
            "generation 1: pid {} bind {address} -> held fd 3",
            sockhold.child_pids()[0]
        )),
        "{line}"
    );
    // Ready by being seen accepting on the installed dup (not fd 3).
    let ready = sockhold.wait_for("generation 1 ready");
    assert!(ready.contains("accepting on fd "), "{ready}");
    assert!(!ready.contains("accepting on fd 3 "), "{ready}");
    let fd: u32 = ready
        .split("accepting on fd ")
        .nth(1)
        .and_then(|rest| rest.split(' ').next())
        .and_then(|fd| fd.parse().ok())
        .unwrap_or_else(|| panic!("no fd in {ready}"));
    let child = sockhold.child_pids()[0];
    // The installed fd is the held socket itself, close-on-exec as the
    // server's own socket was (Python's are).
    let link = |fd: u32| std::fs::read_link(format!("/proc/{child}/fd/{fd}")).unwrap();
    assert_eq!(link(fd), link(3));
    let info = std::fs::read_to_string(format!("/proc/{child}/fdinfo/{fd}")).unwrap();
    let flags = info
        .lines()
        .find_map(|line| line.strip_prefix("flags:"))
        .map(|octal| u32::from_str_radix(octal.trim(), 8).unwrap())
        .unwrap();
    assert_ne!(flags & 0o2000000, 0, "not O_CLOEXEC: {info}");
    // http.server's listen(5) did not shrink sockhold's backlog.
    assert_eq!(listen_backlog(address.port()), 300);
    request_http(address).unwrap();
    reloads_under_load(&sockhold, 3, Stop::CutsOff, move || request_http(address));
    // The held socket was never closed: the port still answers.
    request_http(address).unwrap();
}

#[test]
fn server_that_sets_reuseaddr_and_nonblocking_before_bind_reloads_without_a_refusal() {
    let script = server("binds_itself.py");
    let sockhold = start(
        &["127.0.0.1:0"],
        &with_port(&format!(
            "python3 {script} --port \"$PORT\" --reuseaddr --nonblocking"
        )),
    );
    let ready = sockhold.wait_for("generation 1 ready");
    // O_NONBLOCK, set on the server's own socket before its bind, is on
    // the held socket installed in its place (the server never sets it
    // again).
    let fd: u32 = ready
        .split("accepting on fd ")
        .nth(1)
        .and_then(|rest| rest.split(' ').next())
        .and_then(|fd| fd.parse().ok())
        .unwrap_or_else(|| panic!("no fd in {ready}"));
    let child = sockhold.child_pids()[0];
    let info = std::fs::read_to_string(format!("/proc/{child}/fdinfo/{fd}")).unwrap();
    let flags = info
        .lines()
        .find_map(|line| line.strip_prefix("flags:"))
        .map(|octal| u32::from_str_radix(octal.trim(), 8).unwrap())
        .unwrap();
    assert_ne!(flags & 0o4000, 0, "not O_NONBLOCK: {info}");
    let address = sockhold.tcp_address(0);
    reloads_under_load(&sockhold, 3, Stop::Graceful, move || request_tcp(address));
    request_tcp(address).unwrap();
}

#[test]
fn prefork_server_binding_in_the_parent_reloads_without_a_refusal() {
    let script = server("binds_itself.py");
    let sockhold = start(
        &["127.0.0.1:0"],
        &with_port(&format!("python3 {script} --port \"$PORT\" --prefork 3")),
    );
    sockhold.wait_for("generation 1 ready");
    let address = sockhold.tcp_address(0);
    reloads_under_load(&sockhold, 3, Stop::Graceful, move || request_tcp(address));
    request_tcp(address).unwrap();
}

#[test]
fn unix_server_that_removes_its_path_keeps_sockhold_s_socket_file() {
    unix_server_reloads(false);
}

#[test]
fn unix_server_on_a_relative_path_is_matched_in_its_own_directory() {
    unix_server_reloads(true);
}

/// A Unix socket server that removes its path before binding and at
/// exit; `relative`: sockhold names it `./app.sock` and the server
/// `app.sock`, in the directory they both run in.
fn unix_server_reloads(relative: bool) {
    let dir = TempDir::new();
    let path = dir.join("app.sock");
    let path_text = path.to_str().unwrap().to_string();
    let (held, named) = if relative {
        ("./app.sock", "app.sock")
    } else {
        (path_text.as_str(), path_text.as_str())
    };
    let script = server("binds_itself.py");
    let dir_text = dir.path().to_str().unwrap().to_string();
    // -v: the interceptions after a generation's first are at debug level.
    let sockhold = Sockhold::launched_by(&["env", "-C", &dir_text])
        .args(["-l", held, "-v", "--intercept-bind", "--"])
        .args(["python3", &script, "--unix", named])
        .start();
    sockhold.wait_for("generation 1 ready");
    let inode = inode_of(&path);
    let log = sockhold.log_written_until_now();
    assert!(log.contains(&format!("unlink {named}: kept")), "{log}");
    assert!(log.contains(&format!("bind {named} -> held fd 3")), "{log}");
    let request = {
        let path = path.clone();
        move || request_unix(&path)
    };
    reloads_under_load(&sockhold, 3, Stop::Graceful, request);
    // Every generation removed the path at start and at exit: the file
    // is still the one sockhold bound, and it answers.
    assert_eq!(inode_of(&path), inode);
    request_unix(&path).unwrap();
}

#[test]
fn a_server_that_binds_one_of_two_held_sockets_is_ready_when_it_accepts_on_it() {
    let script = server("binds_itself.py");
    // SERVER_STARTER_PORT=127.0.0.1:P1=3;127.0.0.1:P2=4: the second port.
    let command = vec![
        "sh".to_string(),
        "-c".to_string(),
        format!(
            "p=${{SERVER_STARTER_PORT#*;}}; p=${{p%%=*}}; exec python3 {script} --port \"${{p##*:}}\""
        ),
    ];
    let sockhold = start(&["127.0.0.1:0", "127.0.0.1:0"], &command);
    sockhold.wait_for("-> held fd 4");
    // Seen accepting on the socket it bound; fd 3, open and unused, does
    // not keep it starting.
    let ready = sockhold.wait_for("generation 1 ready");
    assert!(ready.contains("accepting on fd "), "{ready}");
    let address = sockhold.tcp_address(1);
    reloads_under_load(&sockhold, 3, Stop::Graceful, move || request_tcp(address));
}

#[test]
fn a_port_sockhold_does_not_hold_is_bound_for_real() {
    let dir = TempDir::new();
    let port_file = dir.join("port");
    let script = server("binds_itself.py");
    let sockhold = start(
        &["127.0.0.1:0"],
        &with_port(&format!(
            "python3 {script} --port \"$PORT\" --also-any-port {}",
            port_file.display()
        )),
    );
    sockhold.wait_for("generation 1 ready");
    let port: u16 = wait_for_file(&port_file).trim().parse().unwrap();
    let held = sockhold.tcp_address(0);
    assert_ne!(port, held.port());
    let own: std::net::SocketAddr = ([127, 0, 0, 1], port).into();
    let pid = sockhold.child_pids()[0].as_raw();
    assert_eq!(answer_pid(&request_tcp(own).unwrap()), pid);
    assert_eq!(answer_pid(&request_tcp(held).unwrap()), pid);
}

/// A server told another port than sockhold's (a usual slip): its bind
/// runs for real, and one line says that no held socket is claimed.
#[test]
fn a_bind_of_an_address_sockhold_does_not_hold_is_told_once() {
    let other = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = other.local_addr().unwrap().port();
    drop(other);
    let sockhold = start(
        &["127.0.0.1:0"],
        &[
            "python3".to_string(),
            server("binds_itself.py"),
            "--port".to_string(),
            port.to_string(),
        ],
    );
    let line = sockhold.wait_for("not an address sockhold holds");
    let held = sockhold.tcp_address(0);
    assert!(
        line.contains(&format!(
            "bind 127.0.0.1:{port}: not an address sockhold holds (tcp {held})"
        )) && line.contains("give -l the address the server binds"),
        "{line}"
    );
    let own: std::net::SocketAddr = ([127, 0, 0, 1], port).into();
    let deadline = Instant::now() + WAIT;
    let answer = loop {
        match request_tcp(own) {
            Ok(answer) => break answer,
            Err(error) => assert!(Instant::now() < deadline, "{error}"),
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(answer_pid(&answer), sockhold.child_pids()[0].as_raw());
    assert_eq!(
        sockhold
            .log_text()
            .matches("not an address sockhold holds")
            .count(),
        1
    );
}

#[test]
fn a_bind_of_the_other_ip_family_is_reported_and_runs_as_it_is() {
    let script = server("binds_itself.py");
    let sockhold = start(
        &["127.0.0.1:0"],
        &with_port(&format!("python3 {script} --host :: --port \"$PORT\"")),
    );
    let line = sockhold.wait_for("not intercepted");
    let address = sockhold.tcp_address(0);
    assert!(
        line.contains(&format!(
            "bind [::]:{}: not intercepted: sockhold holds tcp {address} on the same port, and the server's socket is IPv6",
            address.port()
        )),
        "{line}"
    );
}

#[test]
fn node_server_binding_dual_stack_matches_the_default_listen_and_reloads() {
    let node = std::ffi::OsStr::new("node");
    if let Err(error) = std::process::Command::new(node).arg("--version").output() {
        panic!("{}", cannot_run(node, &error));
    }
    let script = server("node_http.js");
    // `-l 0`: dual-stack [::], what Node's listen(port) binds.
    let sockhold = start(&["0"], &with_port(&format!("node {script} \"$PORT\"")));
    let line = sockhold.wait_for("bind [::]:");
    assert!(line.contains("-> held fd 3"), "{line}");
    sockhold.wait_for("generation 1 ready");
    let port = sockhold.tcp_address(0).port();
    let v4: std::net::SocketAddr = ([127, 0, 0, 1], port).into();
    let v6: std::net::SocketAddr = (std::net::Ipv6Addr::LOCALHOST, port).into();
    request_http(v6).unwrap();
    reloads_under_load(&sockhold, 3, Stop::Graceful, move || request_http(v4));
    request_http(v6).unwrap();
}

#[test]
#[ignore = "needs root"]
fn as_another_user_the_child_gets_no_new_privs_and_is_intercepted() {
    needs_root();
    // Without CAP_SYS_ADMIN the filter needs no_new_privs; the child says
    // what it has, then becomes the server (a python3 any user may run).
    let python = if Path::new("/usr/bin/python3").exists() {
        "/usr/bin/python3"
    } else {
        "python3"
    };
    let command = with_port(&format!(
        "sh -c 'grep NoNewPrivs /proc/self/status >&2; exec \"$0\" -m http.server \"$1\" --bind 127.0.0.1 --directory /' {python} \"$PORT\""
    ));
    let sockhold = start_with(&["127.0.0.1:0"], &["--user", "nobody"], &command);
    let line = sockhold.wait_for("NoNewPrivs:");
    assert!(line.trim_end().ends_with('1'), "{line}");
    sockhold.wait_for("-> held fd 3");
    sockhold.wait_for("generation 1 ready");
    request_http(sockhold.tcp_address(0)).unwrap();
}

#[test]
fn a_filter_that_cannot_be_installed_is_one_fatal_line_at_start() {
    // Under a sockhold with --intercept-bind, a second one cannot have a
    // seccomp listener of its own (EBUSY): it says so at start and exits
    // 71, which the outer one (--restart never) exits with.
    let (code, log) = run_to_exit(&[
        "-l",
        "127.0.0.1:0",
        "--intercept-bind",
        "--restart",
        "never",
        "--",
        sockhold_bin(),
        "-l",
        "127.0.0.1:0",
        "--intercept-bind",
        "--",
        "true",
    ]);
    assert_eq!(code, 71, "{log}");
    let errors: Vec<&str> = log.lines().filter(|l| l.contains("error:")).collect();
    assert_eq!(
        errors,
        [
            "sockhold: error: cannot use --intercept-bind: cannot install a seccomp filter: device or resource busy (the process already has a seccomp listener above it: sockhold --intercept-bind under another one, or a container manager that intercepts system calls)"
        ],
        "{log}"
    );
}

/// Where seccomp(2) itself is refused (a container's strict profile),
/// --intercept-bind is one fatal line at start, exit 77.
#[test]
fn a_strict_container_refusing_seccomp_is_one_fatal_line_at_start() {
    let output = std::process::Command::new(test_child_bin())
        .args(["--deny-seccomp", sockhold_bin()])
        .args(["-l", "127.0.0.1:0", "--intercept-bind", "--", "true"])
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    let log = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(77), "{log}");
    let errors: Vec<&str> = log.lines().filter(|l| l.contains("error:")).collect();
    assert_eq!(errors.len(), 1, "{log}");
    assert!(
        errors[0].starts_with(
            "sockhold: error: cannot use --intercept-bind: cannot install a seccomp filter: "
        ),
        "{log}"
    );
}

/// `status` lists each live generation's interceptions, as the log words
/// them.
#[test]
fn status_lists_the_interceptions() {
    let dir = TempDir::new();
    let control = dir.join("ctl");
    let control_text = control.to_str().unwrap().to_string();
    let sockhold = start_with(
        &["127.0.0.1:0"],
        &["--stop-signal", "INT", "--control", &control_text],
        &with_port("python3 -m http.server \"$PORT\" --bind 127.0.0.1"),
    );
    sockhold.wait_for("bind 127.0.0.1:");
    sockhold.wait_for("generation 1 ready");
    let address = sockhold.tcp_address(0);
    let child = sockhold.child_pids()[0];
    let output = std::process::Command::new(sockhold_bin())
        .args(["status", "--control", &control_text])
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    let status = String::from_utf8_lossy(&output.stdout);
    assert!(
        status.contains(&format!(
            r#""interceptions":[{{"generation":1,"what":"pid {child} bind {address} -> held fd 3"}}"#
        )),
        "{status}"
    );
}

#[test]
fn intercept_bind_with_accept_is_a_usage_error() {
    let (code, log) = run_to_exit(&["--accept", "--intercept-bind", "-l", "0", "--", "cat"]);
    assert_eq!(code, 64, "{log}");
    assert_eq!(log.lines().count(), 1, "{log}");
}

/// The backlog of the socket listening on `port`, as ss(8) shows it
/// (Send-Q of a listening socket: sk_max_ack_backlog, from sock_diag).
fn listen_backlog(port: u16) -> u32 {
    let ss = std::ffi::OsStr::new("ss");
    let output = std::process::Command::new(ss)
        .args(["-ltnH", &format!("sport = :{port}")])
        .output()
        .unwrap_or_else(|error| panic!("{}", cannot_run(ss, &error)));
    let text = String::from_utf8_lossy(&output.stdout).to_string();
    text.split_whitespace()
        .nth(2)
        .and_then(|backlog| backlog.parse().ok())
        .unwrap_or_else(|| panic!("no listening socket on port {port} in ss's {text:?}"))
}

fn inode_of(path: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(path).unwrap().ino()
}

/// The file's text once it exists (written by rename, so whole).
fn wait_for_file(path: &PathBuf) -> String {
    let deadline = Instant::now() + WAIT;
    loop {
        if let Ok(text) = std::fs::read_to_string(path) {
            return text;
        }
        assert!(
            Instant::now() < deadline,
            "{} never appeared",
            path.display()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}
