//! `--signal-group`: each child leads a process group of its own, and the
//! stop signal and forwarded signals go to the whole group, so a shell
//! wrapper's or a forking server's other processes get them too.

use crate::harness::*;
use nix::sys::signal::Signal;
use std::io::Read;
use std::net::TcpStream;

/// A worker that reports USR1 and TERM on stderr and then says READY=1,
/// so that the test signals only once its handlers are in place. It
/// sleeps in short steps, not in pause(): a signal that comes just before
/// a pause() has its handler run only at the next signal.
const WORKER: &str = "import os, signal, socket, sys, time\n\
def say(text):\n\
\x20   print(text, file=sys.stderr, flush=True)\n\
signal.signal(signal.SIGUSR1, lambda *_: say('worker got USR1'))\n\
def term(*_):\n\
\x20   say('worker got TERM')\n\
\x20   os._exit(0)\n\
signal.signal(signal.SIGTERM, term)\n\
addr = os.environ['NOTIFY_SOCKET']\n\
addr = '\\0' + addr[1:] if addr.startswith('@') else addr\n\
socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM).sendto(b'READY=1', addr)\n\
while True:\n\
\x20   time.sleep(0.1)\n";

/// A shell that ignores USR1 itself, starts the worker and waits: only a
/// signal sent to the group reaches the worker.
const SHELL_WITH_A_WORKER: &str = "trap '' USR1; python3 -c \"$WORKER\" & wait";

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
        .args(["-l", "127.0.0.1:0", "--ready", "notify", "--signal-group"])
        .args(["--", "sh", "-c", SHELL_WITH_A_WORKER])
        .env("WORKER", WORKER)
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
