//! sockhold as PID 1 of a new PID namespace (`unshare --pid --fork
//! --mount-proc`), as a container entrypoint runs: orphans are reaped, a
//! TERM from outside stops it gracefully, and it exits with the child's
//! status. They need root (unshare), so `cargo test` reports them as
//! ignored; `cargo test -- --ignored` runs them, as root.

use crate::harness::*;
use nix::sys::signal::Signal;
use nix::unistd::Pid;
use std::io::{BufRead, BufReader};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::mpsc::{self, Receiver};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// sockhold running as PID 1 of its own PID namespace.
struct Pid1 {
    /// The `unshare` process; `--kill-child` ties the namespace to it.
    unshare: Process,
    /// sockhold, by its pid as seen from here (it is 1 inside); None if it
    /// was gone before it could be looked up. Held by a pidfd: unshare
    /// reaps it when it exits, and its pid may then be reused.
    sockhold: Option<Process>,
    lines: Receiver<String>,
    log: Arc<Mutex<Vec<String>>>,
    exit: Receiver<ExitStatus>,
    exited: bool,
    _dir: TempDir,
}

impl Pid1 {
    fn start(args: &[&str]) -> Pid1 {
        let dir = TempDir::new();
        let mut unshare = Command::new("unshare")
            .args(["--pid", "--fork", "--mount-proc", "--kill-child", "--"])
            .arg(sockhold_bin())
            .args(args)
            .current_dir(dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|error| panic!("{}", cannot_run("unshare".as_ref(), &error)));
        let stderr = unshare.stderr.take().unwrap();
        // Before the exit thread may reap it.
        let unshare_process = Process::of_child(&unshare);
        let (line_tx, lines) = mpsc::channel();
        let log = Arc::new(Mutex::new(Vec::new()));
        {
            let log = Arc::clone(&log);
            std::thread::spawn(move || {
                for line in BufReader::new(stderr).lines() {
                    let Ok(line) = line else { break };
                    log.lock().unwrap().push(line.clone());
                    let _ = line_tx.send(line);
                }
            });
        }
        let (exit_tx, exit) = mpsc::channel();
        std::thread::spawn(move || {
            if let Ok(status) = unshare.wait() {
                let _ = exit_tx.send(status);
            }
        });
        let mut pid1 = Pid1 {
            unshare: unshare_process,
            sockhold: None,
            lines,
            log,
            exit,
            exited: false,
            _dir: dir,
        };
        // Once sockhold has logged, unshare's child has exec'd it.
        pid1.wait_for("generation 1 started");
        let unshare_pid = pid1.unshare.pid();
        let found = children_of(unshare_pid)
            .first()
            .and_then(|&pid| Process::child_of(pid, unshare_pid));
        pid1.sockhold = match found {
            // unshare still runs, so its pid named it throughout the look.
            Some(sockhold) if pid1.unshare.is_running() => Some(sockhold),
            // unshare has exited (and sockhold with it: --restart never),
            // and its pid may have been reused: the pid found may be
            // anyone's, so it is let go unsignalled.
            Some(unsure) => {
                unsure.let_go();
                None
            }
            None => None,
        };
        pid1
    }

    fn sockhold(&self) -> &Process {
        self.sockhold
            .as_ref()
            .unwrap_or_else(|| panic!("sockhold is gone; log:\n{}", self.log_text()))
    }

    /// Signals sockhold from outside its namespace.
    fn signal(&self, signal: Signal) {
        self.sockhold()
            .signal(signal)
            .unwrap_or_else(|error| panic!("signal sockhold: {error}; log:\n{}", self.log_text()));
    }

    fn wait_for(&self, needle: &str) -> String {
        let deadline = Instant::now() + WAIT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) if line.contains(needle) => return line,
                Ok(_) => {}
                Err(_) => panic!("no log line with {needle:?}; log:\n{}", self.log_text()),
            }
        }
    }

    fn log_text(&self) -> String {
        self.log.lock().unwrap().join("\n")
    }

    fn wait_exit(&mut self) -> i32 {
        let status = self
            .exit
            .recv_timeout(WAIT)
            .unwrap_or_else(|_| panic!("sockhold did not exit; log:\n{}", self.log_text()));
        self.exited = true;
        status.code().unwrap_or(-1)
    }
}

impl Drop for Pid1 {
    fn drop(&mut self) {
        if self.exited {
            return;
        }
        if let Some(sockhold) = &self.sockhold {
            let _ = sockhold.signal(Signal::SIGTERM);
        }
        if self.exit.recv_timeout(Duration::from_secs(5)).is_err() {
            // --kill-child: the namespace's PID 1, and with it every
            // process in the namespace, dies with unshare.
            let _ = self.unshare.signal(Signal::SIGKILL);
            let _ = self.exit.recv_timeout(WAIT);
        }
    }
}

/// The children of `pid`, from /proc/PID/task/*/children.
fn children_of(pid: Pid) -> Vec<Pid> {
    let mut children = Vec::new();
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return children;
    };
    for task in tasks.flatten() {
        if let Ok(text) = std::fs::read_to_string(task.path().join("children")) {
            children.extend(
                text.split_whitespace()
                    .filter_map(|p| p.parse().ok())
                    .map(Pid::from_raw),
            );
        }
    }
    children
}

/// Children of `pid` that are zombies (exited, not yet reaped).
fn zombie_children_of(pid: Pid) -> Vec<Pid> {
    children_of(pid)
        .into_iter()
        .filter(|child| {
            std::fs::read_to_string(format!("/proc/{child}/stat")).is_ok_and(|stat| {
                stat.rsplit_once(')')
                    .and_then(|(_, rest)| rest.split_whitespace().next())
                    == Some("Z")
            })
        })
        .collect()
}

#[test]
#[ignore = "needs root"] // to create a PID namespace
fn pid1_reaps_orphaned_grandchildren() {
    needs_root();
    // Each `(sleep 0.1 &)` leaves an orphan: the subshell exits at once and
    // its background sleep is reparented to PID 1, which must reap it.
    let script = format!(
        "for i in 1 2 3; do (sleep 0.1 &); done; exec {} --ready-after 0",
        test_child_bin()
    );
    let mut pid1 = Pid1::start(&[
        "-v",
        "-l",
        "127.0.0.1:0",
        "--ready",
        "notify",
        "--",
        "sh",
        "-c",
        &script,
    ]);
    for _ in 0..3 {
        pid1.wait_for("not a generation's main process");
    }
    let sockhold = pid1.sockhold();
    let zombies = zombie_children_of(sockhold.pid());
    // Still running after the look, so the pid named sockhold during it.
    assert!(sockhold.is_running(), "{}", pid1.log_text());
    assert_eq!(zombies, vec![], "{}", pid1.log_text());
    pid1.signal(Signal::SIGTERM);
    assert_eq!(pid1.wait_exit(), 0, "{}", pid1.log_text());
}

#[test]
#[ignore = "needs root"] // to create a PID namespace
fn pid1_stops_gracefully_on_term_from_outside_the_namespace() {
    needs_root();
    let mut pid1 = Pid1::start(&[
        "-l",
        "127.0.0.1:0",
        "--ready",
        "notify",
        "--",
        test_child_bin(),
        "--ready-after",
        "0",
    ]);
    pid1.wait_for("generation 1 ready");
    pid1.signal(Signal::SIGTERM);
    pid1.wait_for("SIGTERM received: stopping");
    pid1.wait_for("generation 1 exited with signal SIGTERM");
    assert_eq!(pid1.wait_exit(), 0, "{}", pid1.log_text());
}

#[test]
#[ignore = "needs root"] // to create a PID namespace
fn pid1_exits_with_the_child_status() {
    needs_root();
    let mut pid1 = Pid1::start(&[
        "--restart",
        "never",
        "--",
        test_child_bin(),
        "--exit-at-start",
        "3",
    ]);
    assert_eq!(pid1.wait_exit(), 3, "{}", pid1.log_text());

    let mut pid1 = Pid1::start(&[
        "-l",
        "127.0.0.1:0",
        "--restart",
        "never",
        "--ready",
        "notify",
        "--",
        test_child_bin(),
        "--ready-after",
        "0",
        "--exit-after",
        "50",
        "--die-by-signal",
        "12",
    ]);
    assert_eq!(pid1.wait_exit(), 128 + 12, "{}", pid1.log_text());
}

#[test]
#[ignore = "needs root"] // to create a PID namespace
fn pid1_upgrades_in_place_and_stays_pid_1() {
    needs_root();
    // The control socket is in the test's directory (sockhold's working
    // directory), reached from outside the namespace.
    let mut pid1 = Pid1::start(&[
        "-l",
        "127.0.0.1:0",
        "--control",
        "ctl",
        "--ready",
        "notify",
        "--",
        test_child_bin(),
        "--ready-after",
        "0",
    ]);
    pid1.wait_for("generation 1 ready");
    let control = pid1._dir.join("ctl");
    let (code, out, err) = control_client(&["upgrade"], &control);
    assert_eq!(code, 0, "{err}\nlog:\n{}", pid1.log_text());
    assert_eq!(out, format!("upgraded: pid 1 runs {}", sockhold_bin()));
    pid1.wait_for("upgraded: pid 1 now runs");
    let (code, status, err) = control_client(&["status"], &control);
    assert_eq!(code, 0, "{err}");
    assert!(status.starts_with("{\"pid\":1,"), "{status}");
    pid1.signal(Signal::SIGTERM);
    pid1.wait_for("generation 1 exited with signal SIGTERM");
    assert_eq!(pid1.wait_exit(), 0, "{}", pid1.log_text());
}
