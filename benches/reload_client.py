#!/usr/bin/env python3
"""Load client and reload driver for benches/reload.sh (python3 stdlib only).

`run`: while several client threads keep opening NEW connections to
HOST:PORT (connect, read the one-line answer to EOF, close), send SIGHUP to a
supervisor N times, one after another, and measure:

- failed connections (refused, reset, timed out, or a wrong answer);
- connect+response latency of every connection started during the reload
  window: p50, p99, max, and how many took over 100 ms;
- per reload, the time from SIGHUP to the old child's exit, and to the first
  answer any client got from the new child;
- the same latencies in a steady phase (--steady seconds of load before the
  first SIGHUP, no reload), and the supervisor's own CPU time (utime+stime
  of /proc/PID/stat) in the steady phase and in the reload window.

A reload is over once the old child has exited, the new one has answered a
probe connection and the supervisor has reaped the old one; only then is the
next SIGHUP sent, and no sooner than --period after the previous one, so
that every run's window (N periods from the first SIGHUP) covers the same
span of traffic whatever the supervisor. The old child's exit is watched
through a pidfd (readable the moment the process exits), the same way for
every supervisor; the new child is found in
/proc/<supervisor>/task/<supervisor>/children. One JSON object with the
figures is written to --out.

`table`: print the JSON result files given on the command line as a table.
"""

import argparse
import os
import select
import signal
import socket
import sys
import threading
import time

from bench_clients import (
    ANSWER_TIMEOUT, add_run_arguments, count_errors, cpu_ms, largest, load_results,
    median_max, ok_latencies_ms, percentile, print_failures, print_slowest, print_table,
    slowest_connections, write_result)


def children(pid):
    """Pids of the direct children of a single-threaded process."""
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            return [int(p) for p in f.read().split()]
    except FileNotFoundError:
        sys.exit(f"reload_client: supervisor {pid} is gone")


def request(host, port, timeout):
    """One connection: returns (ok, answer pid or error text)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.settimeout(timeout)
        sock.connect((host, port))
        data = b""
        while True:
            chunk = sock.recv(256)
            if not chunk:
                break
            data += chunk
    except OSError as e:
        return False, type(e).__name__
    finally:
        sock.close()
    line = data.decode(errors="replace")
    if not line.startswith("pid="):
        return False, f"bad answer {line!r}" if line else "empty answer"
    return True, int(line.split()[0][4:])


class Worker(threading.Thread):
    """Closed loop of fresh connections until told to stop."""

    def __init__(self, host, port, stop):
        super().__init__(daemon=True)
        self.host, self.port, self.stop = host, port, stop
        self.records = []  # (start, latency, ok, pid or error)

    def run(self):
        clock = time.monotonic
        while not self.stop.is_set():
            start = clock()
            ok, what = request(self.host, self.port, ANSWER_TIMEOUT)
            self.records.append((start, clock() - start, ok, what))


def wait_exit(pidfd, timeout):
    """True once the process behind pidfd has exited (it is then a zombie or gone)."""
    poller = select.poll()
    poller.register(pidfd, select.POLLIN)
    return bool(poller.poll(timeout * 1000))


def one_reload(sup, host, port, timeout):
    """SIGHUP the supervisor, wait until the reload is over; return
    (time of the SIGHUP, ms from it to the old child's exit, new child's pid)."""
    current = children(sup)
    if len(current) != 1:
        sys.exit(f"reload_client: supervisor {sup} has children {current}, expected one")
    old = current[0]
    pidfd = os.pidfd_open(old)
    try:
        hup = time.monotonic()
        os.kill(sup, signal.SIGHUP)
        deadline = hup + timeout
        new = None
        while new is None:
            others = [p for p in children(sup) if p != old]
            if len(others) > 1:
                sys.exit(f"reload_client: several new children {others}")
            if others:
                new = others[0]
            elif time.monotonic() > deadline:
                sys.exit("reload_client: no new child after SIGHUP")
            else:
                time.sleep(0.001)
        if not wait_exit(pidfd, deadline - time.monotonic()):
            sys.exit(f"reload_client: old child {old} still running {timeout}s after SIGHUP")
        old_gone = time.monotonic()
    finally:
        os.close(pidfd)
    # The new child must be serving before the next SIGHUP (a probe waits in
    # the listen queue while nobody accepts).
    while True:
        ok, what = request(host, port, ANSWER_TIMEOUT)
        if ok and what == new:
            break
        if time.monotonic() > deadline:
            sys.exit(f"reload_client: new child {new} never answered")
    # Done once the supervisor has reaped the old child too: the next SIGHUP
    # then finds it idle.
    while children(sup) != [new]:
        if time.monotonic() > deadline:
            sys.exit(f"reload_client: supervisor still has children {children(sup)}")
        time.sleep(0.001)
    return hup, (old_gone - hup) * 1000, new


def run(args):
    host, port, sup = args.host, args.port, args.supervisor_pid
    # The first child may boot slowly: wait until one answers.
    deadline = time.monotonic() + 30
    while not request(host, port, ANSWER_TIMEOUT)[0]:
        if time.monotonic() > deadline:
            sys.exit("reload_client: the first child never answered")
        time.sleep(0.05)

    stop = threading.Event()
    workers = [Worker(host, port, stop) for _ in range(args.workers)]
    for w in workers:
        w.start()
    steady_start = time.monotonic()
    steady_cpu = cpu_ms(sup)
    time.sleep(args.steady)  # steady load before the first reload

    window_start = time.monotonic()
    window_cpu = cpu_ms(sup)
    reloads = []  # (SIGHUP time, ms to old exit, new pid)
    for i in range(args.reloads):
        # Paced: every run covers the same span of traffic around its reloads.
        pause = window_start + i * args.period - time.monotonic()
        if pause > 0:
            time.sleep(pause)
        reloads.append(one_reload(sup, host, port, args.reload_timeout))
    window_end = max(time.monotonic(), window_start + args.reloads * args.period)
    time.sleep(max(0, window_end - time.monotonic()))
    reload_cpu = cpu_ms(sup) - window_cpu

    time.sleep(0.2)
    stop.set()
    for w in workers:
        w.join()

    records = [r for w in workers for r in w.records]
    # When the new child started answering, as the clients saw it: the first
    # answer it gave to any of them.
    first_answer = {}
    for start, latency, ok, what in records:
        if ok:
            done = start + latency
            if done < first_answer.get(what, done + 1):
                first_answer[what] = done
    to_old_exit = [old_ms for _, old_ms, _ in reloads]
    to_new_serving = [(first_answer[new] - hup) * 1000 for hup, _, new in reloads]
    window = [r for r in records if window_start <= r[0] <= window_end]
    latencies = ok_latencies_ms(window)
    steady = ok_latencies_ms(r for r in records if steady_start <= r[0] < window_start)
    # The slowest connections, each with how long after the last SIGHUP it
    # started: tells a stall caused by a reload from scheduling noise.
    hups = [hup for hup, _, _ in reloads]
    slowest = [
        {"ms": round(latency * 1000, 1), "ms_after_hup": round(after * 1000, 1), "answer": what}
        for latency, after, what in slowest_connections(window, hups, window_start)
    ]
    errors = count_errors(records)
    result = {
        "label": args.label,
        "scenario": args.scenario,
        "reloads": args.reloads,
        "workers": args.workers,
        "requests_total": len(records),
        "requests_in_window": len(window),
        "window_s": window_end - window_start,
        "period_s": args.period,
        "failed_total": sum(errors.values()),
        "failed_in_window": sum(1 for r in window if not r[2]),
        "errors": errors,
        "slow_over_100ms": sum(1 for v in latencies if v > 100),
        "distinct_pids": len({r[3] for r in records if r[2]}),
        "latency_ms": {
            "p50": percentile(latencies, 0.50),
            "p99": percentile(latencies, 0.99),
            "max": largest(latencies),
        },
        "slowest": slowest,
        "hup_to_old_exit_ms": summary(to_old_exit),
        "hup_to_new_serving_ms": summary(to_new_serving),
        "steady_s": window_start - steady_start,
        "steady_latency_ms": {
            "p50": percentile(steady, 0.50),
            "p99": percentile(steady, 0.99),
            "max": largest(steady),
        },
        "supervisor_cpu_ms": {"steady": window_cpu - steady_cpu, "reloads": reload_cpu},
    }
    write_result(args.out, result)
    print(
        f"{args.scenario} {args.label}: {len(window)} connections in the window, "
        f"{result['failed_total']} failed, p50/p99/max "
        f"{result['latency_ms']['p50']:.2f}/{result['latency_ms']['p99']:.2f}/"
        f"{result['latency_ms']['max']:.1f} ms, old child stopped after "
        f"{result['hup_to_old_exit_ms']['median']:.0f} ms (median)",
        flush=True,
    )


def summary(values):
    ordered = sorted(values)
    return {"median": percentile(ordered, 0.5), "max": ordered[-1], "min": ordered[0]}


def table(args):
    rows = load_results(args.results)
    if args.readiness:
        return readiness_table(rows, args.slowest)
    header = (
        "scenario",
        "supervisor",
        "conns",
        "failed",
        ">100 ms",
        "p50 ms",
        "p99 ms",
        "max ms",
        "HUP->old exit ms (med/max)",
        "HUP->new answers ms (med/max)",
    )
    lines = [header]
    for r in rows:
        lat, old, new = r["latency_ms"], r["hup_to_old_exit_ms"], r["hup_to_new_serving_ms"]
        lines.append(
            (
                r["scenario"],
                r["label"],
                str(r["requests_in_window"]),
                str(r["failed_total"]),
                str(r["slow_over_100ms"]),
                f"{lat['p50']:.2f}",
                f"{lat['p99']:.2f}",
                f"{lat['max']:.1f}",
                median_max(old),
                median_max(new),
            )
        )
    print_table(lines)
    print_failures_and_slowest(rows, args.slowest, lambda r: f"{r['scenario']} {r['label']}")


def print_failures_and_slowest(rows, slowest, name):
    """What follows both tables: the failures, and with --slowest the
    slowest connections, each row named name(row)."""
    print_failures(rows, name)
    if slowest:
        print_slowest("slowest connections (ms, started ms after the last SIGHUP):", rows, name,
                      lambda s: f"{s['ms']} (+{s['ms_after_hup']:.0f})")


def readiness_table(rows, slowest):
    """The figures benches/readiness.sh reports, against the product's goal:
    0 failed, max latency <= 10 x the steady p99, HUP->old exit = boot time
    + <= 20 ms."""
    lines = [(
        "supervisor",
        "conns",
        "failed",
        "steady p99 ms",
        "p99 ms",
        "max ms",
        "max / steady p99",
        "HUP->old exit ms (med/max)",
        "HUP->new answers ms (med/max)",
        "supervisor CPU ms (steady / reloads)",
    )]
    for r in rows:
        lat, steady = r["latency_ms"], r["steady_latency_ms"]
        old, new, cpu = r["hup_to_old_exit_ms"], r["hup_to_new_serving_ms"], r["supervisor_cpu_ms"]
        lines.append((
            r["label"],
            str(r["requests_in_window"]),
            str(r["failed_total"]),
            f"{steady['p99']:.2f}",
            f"{lat['p99']:.2f}",
            f"{lat['max']:.1f}",
            f"{lat['max'] / steady['p99']:.0f}",
            median_max(old),
            median_max(new),
            f"{cpu['steady']:.0f} / {cpu['reloads']:.0f}",
        ))
    print_table(lines)
    print_failures_and_slowest(rows, slowest, lambda r: r["label"])


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("run", help="load + reloads against one running supervisor")
    add_run_arguments(p)
    p.add_argument("--reloads", type=int, default=20)
    p.add_argument("--period", type=float, default=2.0, help="seconds from one SIGHUP to the next, at least")
    p.add_argument("--steady", type=float, default=0.5, help="seconds of load before the first SIGHUP")
    p.add_argument("--scenario", required=True)
    t = sub.add_parser("table", help="print result files as a table")
    t.add_argument("--slowest", action="store_true", help="also list the slowest connections")
    t.add_argument("--readiness", action="store_true", help="the columns of benches/readiness.sh")
    t.add_argument("results", nargs="+")
    args = parser.parse_args()
    run(args) if args.command == "run" else table(args)


if __name__ == "__main__":
    main()
