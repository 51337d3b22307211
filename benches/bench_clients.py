"""What the load clients of benches/ (reload_client.py, workers_reload.py)
share: the supervisor's CPU time, the statistics over connection records and
the way results are printed (python3 stdlib only).

A connection record is a tuple (start, latency, ok, what): its start
(time.monotonic(), s), its latency (s), whether it succeeded, and what it
got (an answer, or the error that made it fail).
"""

import json
import os

ANSWER_TIMEOUT = 10.0  # seconds; a connection slower than this counts as failed


def cpu_ms(pid):
    """utime + stime of a process (all its threads, not its children), in ms."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    # Fields 14 and 15 of proc(5); the split starts at field 3.
    return (int(fields[11]) + int(fields[12])) * 1000 / os.sysconf("SC_CLK_TCK")


def percentile(sorted_values, fraction):
    """Nearest-rank percentile of an ascending list (nan when it is empty)."""
    if not sorted_values:
        return float("nan")
    rank = max(1, -(-len(sorted_values) * fraction // 1))
    return sorted_values[int(rank) - 1]


def largest(sorted_values):
    """The last of an ascending list (nan when it is empty)."""
    return sorted_values[-1] if sorted_values else float("nan")


def ok_latencies_ms(records):
    """Ascending latencies (ms) of the records' successful connections."""
    return sorted(r[1] * 1000 for r in records if r[2])


def count_errors(records):
    """How many connections failed, by what made them fail."""
    errors = {}
    for r in records:
        if not r[2]:
            errors[r[3]] = errors.get(r[3], 0) + 1
    return errors


def slowest_connections(window, reload_starts, window_start, count=5):
    """The slowest connections of the window, each as (latency s, s from the
    last reload's start before it; from window_start before the first), so
    that a stall a reload caused can be told from scheduling noise."""
    slowest = []
    for start, latency, ok, what in sorted(window, key=lambda r: -r[1])[:count]:
        since = max((s for s in reload_starts if s <= start), default=window_start)
        slowest.append((latency, start - since, what))
    return slowest


def write_result(path, result):
    """One run's figures, as the JSON object `table` reads back."""
    with open(path, "w") as f:
        json.dump(result, f, indent=1)


def load_results(paths):
    """The JSON result files of several runs, in the order given."""
    rows = []
    for path in paths:
        with open(path) as f:
            rows.append(json.load(f))
    return rows


def print_table(lines):
    """A Markdown table: lines[0] is the header; cells are padded to the
    widest of their column, so that it reads as well in a terminal."""
    widths = [max(len(line[i]) for line in lines) for i in range(len(lines[0]))]
    for n, line in enumerate(lines):
        print("| " + " | ".join(cell.ljust(w) for cell, w in zip(line, widths)) + " |")
        if n == 0:
            print("|" + "|".join("-" * (w + 2) for w in widths) + "|")


def median_max(summary):
    """A table cell for a {"median", "max"} summary of ms: "med / max"."""
    return f"{summary['median']:.0f} / {summary['max']:.0f}"


def print_failures(rows, name):
    """One line per row that had failed connections: name(row), then how
    many of each error."""
    for r in rows:
        if r["errors"]:
            print(f"{name(r)} failures: {r['errors']}")


def print_slowest(heading, rows, name, shown):
    """After a blank line, heading, then one line per row: name(row) and
    its slowest connections, each as shown(slow)."""
    print(f"\n{heading}")
    for r in rows:
        print(f"  {name(r)}: " + ", ".join(shown(s) for s in r["slowest"]))


def add_run_arguments(parser):
    """The `run` options both clients take: which supervisor, where it
    listens, how many workers (client threads, or the supervisor's), how long a reload may take, and where the
    result goes."""
    parser.add_argument("--supervisor-pid", type=int, required=True)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--reload-timeout", type=float, default=30.0)
    parser.add_argument("--label", required=True)
    parser.add_argument("--out", required=True)
