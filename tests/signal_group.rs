//! `--signal-group`: each child leads a process group of its own, and the
//! stop signal and forwarded signals go to the whole group, so a shell
//! wrapper's or a forking server's other processes get them too.

use crate::harness::*;
use nix::sys::signal::Signal;
use std::io::Read;
use std::net::TcpStream;

/// A shell that starts a worker and waits, ignoring USR1 itself: only a
/// signal sent to the group reaches the worker, which says so on stderr.
const SHELL_WITH_A_WORKER: &str = "(trap 'echo worker got USR1 >&2' USR1; \
     trap 'echo worker got TERM >&2; exit 0' TERM; \
     while :; do sleep 0.05; done) & \
     trap '' USR1; wait";

#[test]
fn the_child_leads_its_own_group_only_with_signal_group() {
    for (flag, own_group) in [(Some("--signal-group"), true), (None, false)] {
        let sockhold = Sockhold::command()
            .args(["-l", "127.0.0.1:0"])
            .args(flag)
            .args(["--", test_child_bin(), "--report"])
            .start();
        sockhold.wait_for("generation 1 started");
        let report = report_fields(&request_tcp(sockhold.tcp_address(0)).unwrap());
        assert_eq!(
            report["pgid"] == report["pid"],
            own_group,
            "{flag:?}: {report:?}"
        );
    }
}

#[test]
fn forwarded_and_stop_signals_reach_every_process_of_the_group() {
    let mut sockhold = Sockhold::command()
        .args(["-l", "127.0.0.1:0", "--ready", "0", "--signal-group"])
        .args(["--", "sh", "-c", SHELL_WITH_A_WORKER])
        .start();
    sockhold.wait_for("generation 1 ready");
    sockhold.signal(Signal::SIGUSR1);
    sockhold.wait_for("worker got USR1");
    sockhold.signal(Signal::SIGTERM);
    let log = sockhold.exits_with(0);
    assert!(log.contains("worker got TERM"), "{log}");
    assert!(!log.contains("SIGKILL"), "{log}");
}

#[test]
fn per_connection_children_lead_their_own_groups_too() {
    let sockhold = Sockhold::command()
        .args(["--accept", "--inetd", "--signal-group", "-l", "127.0.0.1:0"])
        .args(["--", "sh", "-c", "echo $$ $(cut -d' ' -f5 /proc/$$/stat)"])
        .start();
    sockhold.wait_for("accepting connections");
    let mut answer = String::new();
    TcpStream::connect(sockhold.tcp_address(0))
        .unwrap()
        .read_to_string(&mut answer)
        .unwrap();
    let fields: Vec<&str> = answer.split_whitespace().collect();
    assert_eq!(fields.len(), 2, "{answer:?}");
    assert_eq!(fields[0], fields[1], "pid and pgid: {answer:?}");
}
