//! Faults and bad input from the hardening review (issue 9): each test
//! states what sockhold promises when things go wrong, and each failed
//! before its fix.

use crate::harness::*;

/// Whether this run may create PID namespaces (says why not).
fn can_unshare() -> bool {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("skipped: creating a PID namespace needs root");
        return false;
    }
    true
}

// ---------------------------------------------------------------------
// 12. Leftovers are reaped, not only signalled, before sockhold exits.

#[test]
fn pid1_reaps_every_leftover_before_it_exits() {
    if !can_unshare() {
        return;
    }
    // Each `(sleep 1000 &)` leaves an orphan with PID 1 (sockhold) as its
    // parent; the child then exits, and with --restart never sockhold
    // stops the leftovers and exits. A leftover that is signalled but not
    // reaped stays a zombie until the namespace is torn down, and sockhold
    // never logs its end.
    let mut sockhold = Sockhold::launched_by(&[
        "unshare",
        "--pid",
        "--fork",
        "--mount-proc",
        "--kill-child",
        "--",
    ])
    .args([
        "-v",
        "--restart",
        "never",
        "--",
        "sh",
        "-c",
        "for i in 1 2 3 4 5; do (sleep 1000 &); done; exit 0",
    ])
    .start();
    let log = sockhold.exits_with(0);
    let stopping = log
        .lines()
        .find_map(|line| {
            line.split("stopping what the child left behind: SIGTERM to pids ")
                .nth(1)
        })
        .unwrap_or_else(|| panic!("no leftovers stopped; log:\n{log}"));
    let pids: Vec<&str> = stopping.split_whitespace().collect();
    assert_eq!(pids.len(), 5, "{log}");
    for pid in pids {
        assert!(
            log.contains(&format!("left-behind pid {pid} ended with signal SIGTERM")),
            "leftover {pid} was not reaped; log:\n{log}"
        );
    }
}
