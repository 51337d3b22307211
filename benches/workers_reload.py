#!/usr/bin/env python3
"""Load client and reload driver for benches/workers.sh (python3 stdlib only).

`run`: a steady stream of NEW connections to HOST:PORT at --rate per second
(paced, open loop: a stall shows in every connection that arrives during
it, not only in the few a closed loop would have in flight), each a
`GET /` read to EOF that must answer 200; after --steady seconds, N reloads
of a supervisor of --workers workers, by a signal (--signal HUP) or a
command (--command 'circusctl ... reload'), each once the previous one is
over and at least --period seconds after it. Measured:

- failed connections (refused, reset, timed out after 10 s, not a 200);
- latency (connect to EOF): p99, max and how many took over 100 ms, of the
  steady phase and of the reload window;
- per reload, from the signal (or the start of the command) to the first
  new worker, to the first and to the last old worker gone, and to a full
  set of new workers;
- the supervisor's own CPU time (utime+stime of /proc/PID/stat, not its
  children's) over the reloads, per reload.

The workers are the supervisor's children whose comm is --comm, read from
/proc/SUP/task/*/children (circusd has several threads); the old workers'
exits are watched through pidfds, readable the moment a process exits. A
reload is over once every old worker has exited and the supervisor has
--workers children, none of them old (and the command has returned). One
JSON object with the figures is written to --out.

`table`: print the JSON result files given on the command line as a table.
"""

import argparse
import asyncio
import os
import shlex
import signal
import sys
import time

from bench_clients import (
    ANSWER_TIMEOUT, add_run_arguments, count_errors, cpu_ms, largest, load_results,
    median_max, ok_latencies_ms, percentile, print_failures, print_slowest, print_table,
    slowest_connections, write_result)

clock = time.monotonic


def workers_of(sup, comm):
    """Pids of the supervisor's children (of any of its threads) named comm."""
    pids = set()
    try:
        tasks = os.listdir(f"/proc/{sup}/task")
    except FileNotFoundError:
        sys.exit(f"workers_reload: supervisor {sup} is gone")
    for task in tasks:
        try:
            with open(f"/proc/{sup}/task/{task}/children") as f:
                children = [int(p) for p in f.read().split()]
        except OSError:
            continue  # the thread has ended
        for pid in children:
            try:
                with open(f"/proc/{pid}/comm") as f:
                    if f.read().strip() == comm:
                        pids.add(pid)
            except OSError:
                pass  # it has just exited (ENOENT, or ESRCH while it goes)
    return pids


class Load:
    """Opens a connection every 1/rate s until stopped; records each one."""

    def __init__(self, host, port, rate):
        self.host, self.port, self.rate = host, port, rate
        self.records = []  # (start, latency s, ok, error or None)
        self.pending = set()
        self.stopped = asyncio.Event()

    async def one(self):
        start = clock()
        error = None
        try:
            reader, writer = await asyncio.wait_for(
                asyncio.open_connection(self.host, self.port), ANSWER_TIMEOUT)
            try:
                writer.write(b"GET / HTTP/1.0\r\nHost: bench\r\n\r\n")
                left = ANSWER_TIMEOUT - (clock() - start)
                data = await asyncio.wait_for(reader.read(), max(left, 0.001))
            finally:
                writer.close()
            if not data.startswith(b"HTTP/1.1 200 "):
                error = "empty answer" if not data else "not a 200"
        except (OSError, asyncio.TimeoutError) as e:
            error = type(e).__name__
        self.records.append((start, clock() - start, error is None, error))

    async def run(self):
        started = clock()
        n = 0
        while not self.stopped.is_set():
            task = asyncio.ensure_future(self.one())
            self.pending.add(task)
            task.add_done_callback(self.pending.discard)
            n += 1
            pause = started + n / self.rate - clock()
            if pause > 0:
                try:
                    await asyncio.wait_for(self.stopped.wait(), pause)
                except asyncio.TimeoutError:
                    pass
        if self.pending:
            await asyncio.wait(list(self.pending))


async def wait_pidfd(pidfd):
    """The time at which the process behind pidfd exits."""
    loop = asyncio.get_running_loop()
    done = loop.create_future()

    def readable():
        if not done.done():
            done.set_result(clock())

    loop.add_reader(pidfd, readable)
    try:
        return await done
    finally:
        loop.remove_reader(pidfd)


async def one_reload(args):
    """Reload once; returns a dict of ms from the reload's start."""
    sup, comm = args.supervisor_pid, args.comm
    old = workers_of(sup, comm)
    if len(old) != args.workers:
        sys.exit(f"workers_reload: supervisor {sup} has workers {sorted(old)}, expected {args.workers}")
    pidfds = [os.pidfd_open(pid) for pid in old]
    exits = [asyncio.ensure_future(wait_pidfd(fd)) for fd in pidfds]
    command = None  # the reload command: (when it returned, its output)
    try:
        began = clock()
        if args.signal:
            os.kill(sup, getattr(signal, "SIG" + args.signal))
        else:
            process = await asyncio.create_subprocess_exec(
                *shlex.split(args.command),
                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)

            async def finish():
                output = await process.communicate()
                return clock(), output

            command = asyncio.ensure_future(finish())
        deadline = began + args.reload_timeout
        full_new_set = first_new = None
        while True:
            now = workers_of(sup, comm)
            if first_new is None and now - old:
                first_new = clock()
            if full_new_set is None and len(now) == args.workers and not now & old:
                full_new_set = clock()
            if all(e.done() for e in exits) and full_new_set is not None \
                    and (command is None or command.done()):
                break
            if command is not None and command.done() and process.returncode != 0:
                break  # reported below
            if clock() > deadline:
                sys.exit(f"workers_reload: reload not over after {args.reload_timeout}s: "
                         f"old {sorted(old)}, now {sorted(now)}")
            await asyncio.sleep(0.002)
        if command is not None and process.returncode != 0:
            out, err = (b.decode(errors="replace") for b in command.result()[1])
            sys.exit(f"workers_reload: '{args.command}' failed: {out}{err}")
    finally:
        for fd in pidfds:
            os.close(fd)
    command_done = command.result()[0] if command else None
    exit_times = sorted(e.result() for e in exits)
    ms = lambda t: (t - began) * 1000
    return {
        "began": began,
        "first_old_gone_ms": ms(exit_times[0]),
        "last_old_gone_ms": ms(exit_times[-1]),
        "first_new_ms": ms(first_new),
        "new_set_ms": ms(full_new_set),
        "command_ms": ms(command_done) if command_done else None,
    }


async def run_async(args):
    sup = args.supervisor_pid
    load = Load(args.host, args.port, args.rate)
    # Every worker must be up and past its boot before the load starts.
    deadline = clock() + 60
    while len(workers_of(sup, args.comm)) != args.workers:
        if clock() > deadline:
            sys.exit(f"workers_reload: supervisor {sup} never had {args.workers} workers")
        await asyncio.sleep(0.05)
    await asyncio.sleep(args.boot_ms / 1000 + 0.5)
    load_task = asyncio.ensure_future(load.run())
    steady_start = clock()
    await asyncio.sleep(args.steady)
    window_start = clock()
    window_cpu = cpu_ms(sup)
    reloads = []
    for i in range(args.reloads):
        if reloads:
            pause = reloads[-1]["began"] + args.period - clock()
            if pause > 0:
                await asyncio.sleep(pause)
        reloads.append(await one_reload(args))
    reload_cpu = cpu_ms(sup) - window_cpu
    await asyncio.sleep(1.0)  # the new workers serve a while
    window_end = clock()
    load.stopped.set()
    await load_task

    steady = ok_latencies_ms(r for r in load.records if steady_start <= r[0] < window_start)
    window = [r for r in load.records if window_start <= r[0] <= window_end]
    latencies = ok_latencies_ms(window)
    errors = count_errors(load.records)
    starts = [r["began"] for r in reloads]
    slowest = [
        {"ms": round(latency * 1000, 1), "ms_after_reload": round(after * 1000)}
        for latency, after, _ in slowest_connections(window, starts, window_start)
    ]

    def summary(key):
        values = sorted(r[key] for r in reloads if r[key] is not None)
        if not values:
            return None
        return {"median": percentile(values, 0.5), "max": values[-1]}

    result = {
        "label": args.label,
        "workers": args.workers,
        "boot_ms": args.boot_ms,
        "rate": args.rate,
        "reloads": args.reloads,
        "connections": len(load.records),
        "connections_in_window": len(window),
        "failed": sum(errors.values()),
        "errors": errors,
        "steady_ms": {"p99": percentile(steady, 0.99), "max": largest(steady)},
        "window_ms": {
            "p99": percentile(latencies, 0.99),
            "max": largest(latencies),
            "over_100": sum(1 for v in latencies if v > 100),
        },
        "first_old_gone_ms": summary("first_old_gone_ms"),
        "last_old_gone_ms": summary("last_old_gone_ms"),
        "first_new_ms": summary("first_new_ms"),
        "new_set_ms": summary("new_set_ms"),
        "command_ms": summary("command_ms"),
        "supervisor_cpu_ms_per_reload": reload_cpu / args.reloads,
        "slowest": slowest,
    }
    write_result(args.out, result)
    if args.records:
        # Every connection and reload, in s from the first reload's start.
        with open(args.records, "w") as f:
            for start in starts:
                print(f"reload {start - window_start:.4f}", file=f)
            for start, latency, ok, what in load.records:
                print(f"conn {start - window_start:.4f} {latency * 1000:.1f} {what or 'ok'}", file=f)
    print(
        f"{args.label}: {result['connections']} connections, {result['failed']} failed, "
        f"max {result['window_ms']['max']:.1f} ms, last old worker gone after "
        f"{result['last_old_gone_ms']['median']:.0f} ms (median)",
        flush=True,
    )


def table(args):
    rows = load_results(args.results)
    lines = [(
        "supervisor",
        "conns",
        "failed",
        "over 100 ms",
        "steady p99 / max ms",
        "p99 ms",
        "max ms",
        "first new ms",
        "first old gone ms",
        "last old gone ms (med/max)",
        "/ boot",
        "supervisor CPU ms / reload",
    )]
    med = lambda s: f"{s['median']:.0f}" if s else "-"
    for r in rows:
        w, last = r["window_ms"], r["last_old_gone_ms"]
        lines.append((
            r["label"],
            str(r["connections"]),
            str(r["failed"]),
            str(w["over_100"]),
            f"{r['steady_ms']['p99']:.1f} / {r['steady_ms']['max']:.1f}",
            f"{w['p99']:.1f}",
            f"{w['max']:.1f}",
            med(r["first_new_ms"]),
            med(r["first_old_gone_ms"]),
            median_max(last),
            f"{last['median'] / r['boot_ms']:.2f}",
            f"{r['supervisor_cpu_ms_per_reload']:.0f}",
        ))
    print_table(lines)
    print_failures(rows, lambda r: r["label"])
    print_slowest("slowest connections (ms, started ms after the last reload's start):", rows,
                  lambda r: r["label"], lambda s: f"{s['ms']} (+{s['ms_after_reload']})")
    commands = [r for r in rows if r["command_ms"]]
    if commands:
        print("\nthe reload command returned after (ms, median):")
        for r in commands:
            print(f"  {r['label']}: {r['command_ms']['median']:.0f}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command_name", required=True)
    p = sub.add_parser("run", help="load + reloads against one running supervisor")
    add_run_arguments(p)
    p.add_argument("--comm", default="cpu_server", help="the workers' process name")
    p.add_argument("--boot-ms", type=float, required=True, help="the workers' boot time")
    how = p.add_mutually_exclusive_group(required=True)
    how.add_argument("--signal", help="reload by this signal to the supervisor, e.g. HUP")
    how.add_argument("--command", help="reload by running this command")
    p.add_argument("--reloads", type=int, default=3)
    p.add_argument("--period", type=float, default=6.0, help="seconds from one reload's start to the next, at least")
    p.add_argument("--rate", type=float, default=200, help="new connections per second")
    p.add_argument("--steady", type=float, default=2.0, help="seconds of load before the first reload")
    p.add_argument("--records", help="also write every connection's start, latency and outcome here")
    t = sub.add_parser("table", help="print result files as a table")
    t.add_argument("results", nargs="+")
    args = parser.parse_args()
    if args.command_name == "run":
        asyncio.run(run_async(args))
    else:
        table(args)


if __name__ == "__main__":
    main()
