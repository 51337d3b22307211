//! The control socket and its client: `sockhold reload|status|stop
//! --control PATH`, peer credentials, and `--pid-file`.

use crate::harness::{
    Process, Sockhold, TempDir, WAIT, answer_pid, request_tcp, sockhold_bin, test_child_bin,
};
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};

/// The client's outcome: exit code, stdout, stderr.
struct Answer {
    code: i32,
    stdout: String,
    stderr: String,
}

fn answer(output: Output) -> Answer {
    Answer {
        code: output.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&output.stdout).trim().to_string(),
        stderr: String::from_utf8_lossy(&output.stderr).trim().to_string(),
    }
}

fn client_command(request: &str, control: &Path) -> Command {
    let mut command = Command::new(sockhold_bin());
    command
        .arg(request)
        .arg("--control")
        .arg(control)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    command
}

/// Runs the client to completion (bounded: sockhold's own timers bound
/// every answer, and the harness's WAIT bounds sockhold).
fn client(request: &str, control: &Path) -> Answer {
    answer(
        client_command(request, control)
            .output()
            .expect("run the client"),
    )
}

/// Starts the client in the background; the `Process` SIGKILLs it (by
/// pidfd) if the test ends before the client does.
fn spawn_client(request: &str, control: &Path) -> (Child, Process) {
    let child = client_command(request, control)
        .spawn()
        .expect("start the client");
    let process = Process::of_child(&child);
    (child, process)
}

/// sockhold on a loopback port with a control socket in `dir`, generation 1
/// ready.
fn serving_with_control(dir: &TempDir, extra: &[&str], command: &[&str]) -> Sockhold {
    let sockhold = Sockhold::command()
        .args(["-l", "127.0.0.1:0", "--ready", "100ms", "--control"])
        .arg(dir.join("ctl"))
        .args(extra)
        .arg("--")
        .args(command)
        .start();
    sockhold.wait_for("generation 1 ready");
    sockhold
}

#[test]
fn reload_answers_once_the_new_generation_is_ready() {
    let dir = TempDir::new();
    let sockhold = serving_with_control(&dir, &[], &[test_child_bin()]);
    let reply = client("reload", &dir.join("ctl"));
    assert_eq!(reply.code, 0, "stderr: {}", reply.stderr);
    let pid: i32 = reply
        .stdout
        .strip_prefix("generation 2 pid ")
        .and_then(|pid| pid.parse().ok())
        .unwrap_or_else(|| panic!("unexpected answer {:?}", reply.stdout));
    // By the time the client has its answer, generation 2 is ready and
    // generation 1 has been told to stop: the line is among those written
    // before now (whether or not the harness has read them yet).
    let log = sockhold.log_written_until_now();
    assert!(log.contains("generation 1 stopping"), "log:\n{log}");
    sockhold.wait_for("generation 1 exited");
    assert_eq!(
        answer_pid(&request_tcp(sockhold.tcp_address(0)).unwrap()),
        pid
    );
}

#[test]
fn failed_reload_exits_non_zero_with_the_reason_and_the_old_generation_serves() {
    let dir = TempDir::new();
    let fail_flag = dir.join("fail");
    // Generation 1 serves; any generation started once the flag exists
    // exits at once with status 3. Readiness by notification, so that the
    // failing generation cannot be taken for ready, however slowly it
    // gets to its exit.
    let script = format!(
        "if [ -e '{}' ]; then exit 3; fi; exec '{}' --ready-after 0",
        fail_flag.display(),
        test_child_bin()
    );
    let sockhold = Sockhold::command()
        .args(["-l", "127.0.0.1:0", "--ready", "notify", "--control"])
        .arg(dir.join("ctl"))
        .args(["--", "sh", "-c", &script])
        .start();
    sockhold.wait_for("generation 1 ready");
    let serving = answer_pid(&request_tcp(sockhold.tcp_address(0)).unwrap());
    std::fs::write(&fail_flag, "").unwrap();
    let reply = client("reload", &dir.join("ctl"));
    assert_eq!(
        reply.code, 1,
        "stdout: {} stderr: {}",
        reply.stdout, reply.stderr
    );
    assert!(
        reply
            .stderr
            .contains("generation 2 exited with status 3 before ready"),
        "stderr: {}",
        reply.stderr
    );
    assert!(reply.stderr.starts_with("sockhold: error: "));
    assert_eq!(
        reply.stderr.lines().count(),
        1,
        "one line: {}",
        reply.stderr
    );
    assert_eq!(
        answer_pid(&request_tcp(sockhold.tcp_address(0)).unwrap()),
        serving
    );
}

#[test]
fn reload_asked_during_a_reload_answers_with_the_queued_generation() {
    let dir = TempDir::new();
    let ctl = dir.join("ctl");
    let sockhold = Sockhold::command()
        .args(["-l", "127.0.0.1:0", "--ready", "notify", "--control"])
        .arg(&ctl)
        .args(["--", test_child_bin(), "--ready-after", "800"])
        .start();
    sockhold.wait_for("generation 1 ready");
    let (first, _first_process) = spawn_client("reload", &ctl);
    sockhold.wait_for("generation 2 started");
    let (second, _second_process) = spawn_client("reload", &ctl);
    sockhold.wait_for("reload queued");
    let first = answer(first.wait_with_output().unwrap());
    let second = answer(second.wait_with_output().unwrap());
    assert_reloaded(&first, 2);
    assert_reloaded(&second, 3);
}

/// A client run that reports a successful reload to generation `generation`.
fn assert_reloaded(reply: &Answer, generation: u64) {
    assert_eq!(reply.code, 0, "{}", reply.stderr);
    let expected = format!("generation {generation} pid ");
    assert!(reply.stdout.starts_with(&expected), "{}", reply.stdout);
}

#[test]
fn a_client_that_hangs_up_before_the_answer_disturbs_nothing() {
    let dir = TempDir::new();
    let sockhold = serving_with_control(&dir, &[], &[test_child_bin()]);
    {
        let mut stream = UnixStream::connect(dir.join("ctl")).unwrap();
        stream.write_all(b"reload\n").unwrap();
        sockhold.wait_for("control: reload requested");
    }
    sockhold.wait_for("generation 2 ready");
    let reply = client("reload", &dir.join("ctl"));
    assert_reloaded(&reply, 3);
}

#[test]
fn status_is_one_json_object_with_sockets_and_generations() {
    let dir = TempDir::new();
    let sockhold = serving_with_control(&dir, &[], &[test_child_bin()]);
    let serving = answer_pid(&request_tcp(sockhold.tcp_address(0)).unwrap());
    let reply = client("status", &dir.join("ctl"));
    assert_eq!(reply.code, 0, "{}", reply.stderr);
    // Parsed by a real JSON parser; prints the fields the test checks.
    let check = Command::new("python3")
        .args([
            "-c",
            "import json, sys\n\
             s = json.loads(sys.argv[1])\n\
             g = s['generations']\n\
             print(s['pid'], s['state'], s['restarts'], len(s['sockets']), s['sockets'][0]['address'], \
             s['sockets'][0]['fd'], s['sockets'][0]['name'], len(g), g[0]['id'], g[0]['pid'], g[0]['state'], \
             g[0]['cause'], s['uptime_seconds'] >= g[0]['age_seconds'] >= 0, g[0]['started'] > 1e9)",
            &reply.stdout,
        ])
        .output()
        .expect("python3");
    assert!(
        check.status.success(),
        "not JSON: {}\n{}",
        reply.stdout,
        String::from_utf8_lossy(&check.stderr)
    );
    let fields = String::from_utf8_lossy(&check.stdout).trim().to_string();
    assert_eq!(
        fields,
        format!(
            "{} running 0 1 tcp {} 3 fd3 1 1 {serving} current launch True True",
            sockhold.pid,
            sockhold.tcp_address(0)
        )
    );
}

#[test]
fn stop_stops_sockhold_and_returns_once_it_has_exited() {
    let dir = TempDir::new();
    let pid_file = dir.join("pid");
    let mut sockhold = serving_with_control(
        &dir,
        &["--pid-file", pid_file.to_str().unwrap()],
        &[test_child_bin()],
    );
    let reply = client("stop", &dir.join("ctl"));
    assert_eq!(reply.code, 0, "{}", reply.stderr);
    // The client returned: sockhold has cleaned up and is exiting.
    assert!(!dir.join("ctl").exists(), "control socket left behind");
    assert!(!pid_file.exists(), "pid file left behind");
    sockhold.exits_with(0);
}

#[test]
fn unknown_requests_get_an_error_line() {
    let dir = TempDir::new();
    let _sockhold = serving_with_control(&dir, &[], &[test_child_bin()]);
    let mut stream = UnixStream::connect(dir.join("ctl")).unwrap();
    stream.set_read_timeout(Some(WAIT)).unwrap();
    stream.write_all(b"restart\n").unwrap();
    let mut reply = String::new();
    std::io::Read::read_to_string(&mut stream, &mut reply).unwrap();
    assert!(
        reply.starts_with("error unknown request 'restart'"),
        "{reply}"
    );
    // An over-long request is refused without waiting for its end.
    let mut stream = UnixStream::connect(dir.join("ctl")).unwrap();
    stream.set_read_timeout(Some(WAIT)).unwrap();
    stream.write_all(&[b'x'; 300]).unwrap();
    let mut reply = String::new();
    std::io::Read::read_to_string(&mut stream, &mut reply).unwrap();
    assert!(reply.starts_with("error request longer than"), "{reply}");
}

#[test]
#[ignore = "needs root"] // to run a client as another user
fn control_socket_is_owner_only_and_checks_peer_credentials() {
    crate::harness::needs_root();
    let dir = TempDir::new();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let _sockhold = serving_with_control(&dir, &[], &[test_child_bin()]);
    let ctl = dir.join("ctl");
    let mode = std::fs::metadata(&ctl).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let as_nobody = || {
        let mut command = client_command("status", &ctl);
        command.uid(65534).gid(65534);
        answer(command.output().unwrap())
    };
    // The file's mode keeps other users out...
    let reply = as_nobody();
    assert_eq!(reply.code, 77, "{}", reply.stderr);
    assert!(
        reply.stderr.contains("permission denied"),
        "{}",
        reply.stderr
    );
    // ...and if the mode is loosened, SO_PEERCRED still does.
    std::fs::set_permissions(&ctl, std::fs::Permissions::from_mode(0o666)).unwrap();
    let reply = as_nobody();
    assert_eq!(reply.code, 77, "{}", reply.stderr);
    assert!(
        reply
            .stderr
            .contains("uid 65534 is neither sockhold's uid 0 nor root"),
        "{}",
        reply.stderr
    );
    assert!(reply.stdout.is_empty());
}

#[test]
fn client_without_a_sockhold_exits_69() {
    let dir = TempDir::new();
    let reply = client("reload", &dir.join("nothing-here"));
    assert_eq!(reply.code, 69, "{}", reply.stderr);
    assert!(
        reply
            .stderr
            .starts_with("sockhold: error: cannot reach sockhold at '"),
        "{}",
        reply.stderr
    );
}

#[test]
fn pid_file_holds_the_pid_and_is_removed_at_exit_only_if_still_ours() {
    let dir = TempDir::new();
    let pid_file = dir.join("app.pid");
    let mut sockhold = Sockhold::command()
        .args(["-l", "127.0.0.1:0", "--pid-file"])
        .arg(&pid_file)
        .args(["--", test_child_bin()])
        .start();
    sockhold.wait_for("generation 1 started");
    assert_eq!(
        std::fs::read_to_string(&pid_file).unwrap(),
        format!("{}\n", sockhold.pid)
    );
    sockhold.signal(nix::sys::signal::Signal::SIGTERM);
    sockhold.exits_with(0);
    assert!(!pid_file.exists());
    // No temporary file is left next to it.
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);

    // A pid file that another process has since rewritten is left alone.
    let mut sockhold = Sockhold::command()
        .args(["-l", "127.0.0.1:0", "--pid-file"])
        .arg(&pid_file)
        .args(["--", test_child_bin()])
        .start();
    sockhold.wait_for("generation 1 started");
    std::fs::write(&pid_file, "1\n").unwrap();
    sockhold.signal(nix::sys::signal::Signal::SIGTERM);
    sockhold.exits_with(0);
    assert_eq!(std::fs::read_to_string(&pid_file).unwrap(), "1\n");
}
