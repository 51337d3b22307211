//! `--stdin-socket`: the one held listening socket is each child's stdin
//! as well as fd 3 (spawn-fcgi's and inetd "wait" services' convention),
//! across reloads; stdout stays sockhold's.

use crate::harness::*;
use nix::sys::signal::Signal;

/// Accepts on fd 0, as a FastCGI backend does; answers with its pid, whether
/// fd 0 and fd 3 are the same socket, LISTEN_FDS, and whether its stdout is
/// a socket.
const STDIN_SERVER: &str = "import os, socket, stat\n\
    s = socket.socket(fileno=0)\n\
    same = os.fstat(0).st_ino == os.fstat(3).st_ino\n\
    out_socket = stat.S_ISSOCK(os.fstat(1).st_mode)\n\
    while True:\n\
    \x20   c, _ = s.accept()\n\
    \x20   c.sendall(('pid=%d same=%d fds=%s stdout_socket=%d\\n' % (os.getpid(), same, os.environ['LISTEN_FDS'], out_socket)).encode())\n\
    \x20   c.close()\n";

#[test]
fn the_listening_socket_is_stdin_and_fd_3_across_a_reload() {
    let sockhold = Sockhold::command()
        .args(["-l", "127.0.0.1:0", "--stdin-socket", "--"])
        .args(["python3", "-c", STDIN_SERVER])
        .start();
    // Seen accepting on its fd 0: the observer knows the socket by inode.
    let ready = sockhold.wait_for("generation 1 ready:");
    assert!(ready.contains("accepting on fd 0"), "{ready}");
    let first = request_tcp(sockhold.tcp_address(0)).unwrap();
    assert!(
        first.contains("same=1 fds=1 stdout_socket=0"),
        "fd 0 and fd 3 are the one socket, stdout is not it: {first}"
    );
    sockhold.signal(Signal::SIGHUP);
    sockhold.wait_for("generation 2 ready:");
    sockhold.wait_for("generation 1 exited");
    let second = request_tcp(sockhold.tcp_address(0)).unwrap();
    assert!(second.contains("same=1 fds=1"), "{second}");
    assert_ne!(answer_pid(&first), answer_pid(&second));
}

#[test]
fn with_workers_each_worker_has_the_socket_on_stdin_and_a_rolling_reload_keeps_that() {
    let sockhold = Sockhold::command()
        .args([
            "-l",
            "127.0.0.1:0",
            "--stdin-socket",
            "--workers",
            "2",
            "--",
        ])
        .args(["python3", "-c", STDIN_SERVER])
        .start();
    let ready = sockhold.wait_for("generation 1 ready:");
    assert!(ready.contains("accepting on fd 0"), "{ready}");
    let address = sockhold.tcp_address(0);
    let answers = |count: usize| {
        let mut pids = std::collections::HashSet::new();
        for _ in 0..2000 {
            let answer = request_tcp(address).unwrap();
            assert!(answer.contains("same=1 fds=1 stdout_socket=0"), "{answer}");
            pids.insert(answer_pid(&answer));
            if pids.len() == count {
                break;
            }
        }
        pids
    };
    let first = answers(2);
    assert_eq!(first.len(), 2, "both workers answer: {first:?}");
    sockhold.signal(Signal::SIGHUP);
    sockhold.wait_for("generation 2 ready:");
    // Both old workers are gone (this server does not drain at SIGTERM):
    // worker 1 is told to stop last, worker 0 may exit before or after.
    sockhold.wait_for("generation 1 worker 1 exited");
    if !sockhold.log_text().contains("generation 1 worker 0 exited") {
        sockhold.wait_for("generation 1 worker 0 exited");
    }
    let second = answers(2);
    assert!(first.is_disjoint(&second), "{first:?} {second:?}");
}

#[test]
fn stdin_socket_needs_exactly_one_socket() {
    let (code, log) = run_to_exit(&[
        "-l",
        "127.0.0.1:0",
        "-l",
        "127.0.0.1:0",
        "--stdin-socket",
        "--",
        "true",
    ]);
    assert_eq!(code, 64, "{log}");
    assert!(
        log.contains(
            "sockhold: error: cannot use --stdin-socket with 2 sockets: stdin is one socket"
        ) && log.contains("give exactly one -l"),
        "{log}"
    );
    assert_eq!(log.trim().lines().count(), 1, "one line: {log}");
    let (code, log) = run_to_exit(&["--stdin-socket", "--", "true"]);
    assert_eq!(code, 64, "{log}");
    assert!(log.contains("with 0 sockets"), "{log}");
}

#[test]
fn stdin_socket_is_refused_with_accept() {
    let (code, log) = run_to_exit(&[
        "-l",
        "127.0.0.1:0",
        "--stdin-socket",
        "--accept",
        "--",
        "true",
    ]);
    assert_eq!(code, 64, "{log}");
    assert!(
        log.contains("--stdin-socket") && log.contains("--accept"),
        "{log}"
    );
}

/// lighttpd (the real web server, started by the test) in front of the
/// FastCGI backend at `backend`, for URLs ending in `extension`, serving
/// `www` on a Unix socket of its own in `dir`; stopped (TERM, then
/// reaped) when dropped.
struct Lighttpd {
    child: std::process::Child,
    process: Process,
    front: std::path::PathBuf,
}

impl Lighttpd {
    fn start(
        dir: &TempDir,
        www: &std::path::Path,
        backend: &std::path::Path,
        extension: &str,
    ) -> Lighttpd {
        let front = dir.join("http.sock");
        let config = dir.join("lighttpd.conf");
        std::fs::write(
            &config,
            format!(
                "server.document-root = \"{www}\"\n\
                 server.bind = \"{front}\"\n\
                 server.errorlog = \"{log}\"\n\
                 server.modules = (\"mod_fastcgi\")\n\
                 fastcgi.server = (\"{extension}\" => ((\"socket\" => \"{backend}\", \"check-local\" => \"disable\")))\n",
                www = www.display(),
                front = front.display(),
                log = dir.join("lighttpd.log").display(),
                backend = backend.display(),
            ),
        )
        .unwrap();
        let child = std::process::Command::new("lighttpd")
            .arg("-D")
            .arg("-f")
            .arg(&config)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap_or_else(|error| panic!("{}", cannot_run("lighttpd".as_ref(), &error)));
        let process = Process::of_child(&child);
        Lighttpd {
            child,
            process,
            front,
        }
    }

    /// A GET through lighttpd that must answer 200.
    fn getter(&self) -> impl Fn(&str) -> std::io::Result<String> + Clone + Send + 'static {
        let front = self.front.clone();
        move |path: &str| {
            let mut stream = std::os::unix::net::UnixStream::connect(&front)?;
            stream.set_read_timeout(Some(std::time::Duration::from_secs(20)))?;
            std::io::Write::write_all(
                &mut stream,
                format!("GET {path} HTTP/1.0\r\nHost: test\r\n\r\n").as_bytes(),
            )?;
            let mut answer = String::new();
            std::io::Read::read_to_string(&mut stream, &mut answer)?;
            if answer.split_whitespace().nth(1) != Some("200") {
                return Err(std::io::Error::other(format!("bad answer {answer:?}")));
            }
            Ok(answer)
        }
    }

    /// The first answer to `path`, once lighttpd has bound its socket
    /// (after reading its configuration).
    fn first_answer(&self, path: &str) -> String {
        let get = self.getter();
        let deadline = std::time::Instant::now() + WAIT;
        loop {
            match get(path) {
                Ok(answer) => return answer,
                Err(error) => assert!(
                    std::time::Instant::now() < deadline,
                    "lighttpd never answered: {error}"
                ),
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
    }
}

impl Drop for Lighttpd {
    fn drop(&mut self) {
        let _ = self.process.signal(Signal::SIGTERM);
        let _ = self.child.wait();
    }
}

/// lighttpd in front of php-cgi, a real FastCGI backend that takes the
/// listening socket on its stdin: served, and served through 3 reloads
/// under a stream of requests with none failed, a slow request in flight
/// at a reload included.
#[test]
fn lighttpd_reaches_php_cgi_through_reloads_with_no_request_failed() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};
    let dir = TempDir::new();
    let www = dir.join("www");
    std::fs::create_dir(&www).unwrap();
    std::fs::write(
        www.join("index.php"),
        // A busy wait: a signal would cut a sleep short.
        "<?php if (isset($_GET['slow'])) { touch('slow-started'); $t = microtime(true); while (microtime(true) - $t < 1.5) {} }\n\
         echo 'pid=' . getmypid() . \"\\n\";\n",
    )
    .unwrap();
    let backend = dir.join("php.sock");
    // php-cgi ends after PHP_FCGI_MAX_REQUESTS (500) requests, with status
    // 0: unlimited here, as the man page's example says.
    let sockhold = Sockhold::command()
        .env("PHP_FCGI_MAX_REQUESTS", "0")
        .args(["--stdin-socket", "-l"])
        .arg(&backend)
        .args(["--", "php-cgi"])
        .start();
    sockhold.wait_for("generation 1 ready:");
    let lighttpd = Lighttpd::start(&dir, &www, &backend, ".php");
    let get = lighttpd.getter();
    let first_pid = answer_pid(&lighttpd.first_answer("/index.php"));

    let stop = Arc::new(AtomicBool::new(false));
    let get_index = get.clone();
    let load = hammer(stop.clone(), move || get_index("/index.php"));
    let get_slow = get.clone();
    let slow = std::thread::spawn(move || get_slow("/index.php?slow=1"));
    // The slow request is in php-cgi's hands before the first reload (the
    // script marks its start in its directory), for 1.5 s.
    let started = www.join("slow-started");
    let deadline = std::time::Instant::now() + WAIT;
    while !started.exists() {
        assert!(
            std::time::Instant::now() < deadline,
            "the slow request never started"
        );
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    assert!(!slow.is_finished(), "the slow request is in flight");
    for generation in 2..=4 {
        sockhold.signal(Signal::SIGHUP);
        sockhold.wait_for(&format!("generation {generation} ready:"));
        sockhold.wait_for(&format!("generation {} exited", generation - 1));
    }
    stop.store(true, Ordering::SeqCst);
    let (answered, failures, pids) = load.join().unwrap();
    let slow_answer = slow.join().unwrap();
    drop(lighttpd);
    assert!(
        failures.is_empty(),
        "{} failed: {failures:?}",
        failures.len()
    );
    assert!(answered > 0);
    assert!(pids.len() >= 2, "several generations answered: {pids:?}");
    assert_eq!(
        answer_pid(&slow_answer.expect("the slow request in flight completes")),
        first_pid,
        "the slow request was the first generation's"
    );
}

/// lighttpd in front of fcgiwrap (CGI over FastCGI, the socket on its
/// stdin), which SIGTERM ends at once: through 3 reloads under a stream of
/// requests, at most the request in hand is lost per reload, and lighttpd
/// always reaches a backend (a refused backend socket would fail every
/// request for a while, far more than one per reload).
#[test]
fn lighttpd_reaches_fcgiwrap_through_reloads_losing_at_most_the_request_in_hand() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};
    let dir = TempDir::new();
    let www = dir.join("www");
    std::fs::create_dir(&www).unwrap();
    let script = www.join("pid.cgi");
    // fcgiwrap runs the script as a child of its own: $PPID is fcgiwrap.
    std::fs::write(
        &script,
        "#!/bin/sh\nprintf 'Content-Type: text/plain\\r\\n\\r\\npid=%s\\n' \"$PPID\"\n",
    )
    .unwrap();
    std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let backend = dir.join("cgi.sock");
    let sockhold = Sockhold::command()
        .args(["--stdin-socket", "-l"])
        .arg(&backend)
        .args(["--", "fcgiwrap"])
        .start();
    let started = sockhold.wait_for("generation 1 started: pid ");
    sockhold.wait_for("generation 1 ready:");
    let lighttpd = Lighttpd::start(&dir, &www, &backend, ".cgi");
    let get = lighttpd.getter();
    let first_pid = answer_pid(&lighttpd.first_answer("/pid.cgi"));
    assert!(started.ends_with(&format!("pid {first_pid}")), "{started}");

    let stop = Arc::new(AtomicBool::new(false));
    let load = hammer(stop.clone(), move || get("/pid.cgi"));
    for generation in 2..=4 {
        sockhold.signal(Signal::SIGHUP);
        sockhold.wait_for(&format!("generation {generation} ready:"));
        sockhold.wait_for(&format!("generation {} exited", generation - 1));
    }
    stop.store(true, Ordering::SeqCst);
    let (answered, failures, pids) = load.join().unwrap();
    drop(lighttpd);
    assert!(
        failures.len() <= 3,
        "more than the request in hand per reload: {} failed: {failures:?}",
        failures.len()
    );
    assert!(answered > 0);
    assert!(pids.len() >= 2, "several generations answered: {pids:?}");
}
