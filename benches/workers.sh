#!/usr/bin/env bash
# Workers benchmark: sockhold --workers N side by side with circus
# (numprocesses N, use_sockets), on the same CPU-bound single-threaded HTTP
# server (benches/cpu_server.c). Two parts in one run:
#   1. throughput of 1 and 2 workers on this machine (wrk, new connection
#      per request), and the ratio workers 2 / workers 1;
#   2. reloads of 4 workers that boot for a known time, under a steady
#      stream of new connections: failed connections, latency, and the time
#      from the reload's start to the last old worker gone.
# circus is installed from PyPI into a cache directory if it is missing.
# See benches/README.md.
# Usage: benches/workers.sh [--rounds N] [--seconds S] [--burn-ms MS]
#                           [--reloads N] [--boot-ms MS] [--rate R] [--only PART]
#   --rounds 8 (throughput rounds, the 4 rows in rotating order), --seconds 2
#   (per row and round), --burn-ms 2 (CPU per request, part 1), --reloads 3,
#   --boot-ms 1000 (the workers' boot in part 2), --rate 200 (new connections
#   per second in part 2), --only throughput|reload.
# Environment: SOCKHOLD_OPTS, extra options for every sockhold command line;
#   CIRCUS_VENV, where circus is (installed if missing)
#   [${XDG_CACHE_HOME:-~/.cache}/sockhold-bench/circus-venv]; KEEP_RESULTS, a
#   directory to keep part 2's JSON results and every connection's record in.
set -euo pipefail
# shellcheck source=benches/lib.sh
. "$(dirname "$0")/lib.sh"

rounds=8
seconds=2
burn_ms=2
reloads=3
boot_ms=1000
rate=200
only=
parse_options rounds seconds burn_ms reloads boot_ms rate only -- "$@"
read -r -a sockhold_opts <<< "${SOCKHOLD_OPTS:-}"

build_release sockhold
require_programs "gcc python3 wrk" cc python3 wrk

# circus: from PyPI, into a virtual environment kept in a cache directory.
venv=${CIRCUS_VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/sockhold-bench/circus-venv}
if [ ! -x "$venv/bin/circusd" ] || [ ! -x "$venv/bin/circusctl" ]; then
    echo "workers.sh: circus is not in $venv: installing it from PyPI there (pip install circus)"
    mkdir -p "$(dirname "$venv")"
    python3 -m venv "$venv" || die 69 "python3 -m venv failed (apt-get install -y python3-venv)"
    "$venv/bin/pip" install --quiet circus || die 69 "pip install circus failed"
fi
circus_version=$("$venv/bin/python" -c 'import circus; print(circus.__version__)')

make_temp_dir workers
cc -O2 -Wall -o "$tmp/cpu_server" "$root/benches/cpu_server.c"
server=$tmp/cpu_server
client=$root/benches/workers_reload.py

instance=         # names a circus instance's files in $tmp
running=()        # part 1's supervisors, all running at once
# The supervisor's workers: its children (of any thread: circusd has
# several) that run cpu_server.
workers_of() {
    local pid
    for pid in $(children_of "$1"); do
        [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = cpu_server ] && echo "$pid"
    done
    return 0
}
# circus may take its graceful_timeout (10 s) to stop its workers.
supervisor_grace_seconds=10
# The exit trap stops these besides sup_pid.
stop_script_processes() {
    for sup_pid in ${running[@]+"${running[@]}"}; do stop_supervisor; done
}

# start_supervisor KIND N LOG [SERVER ARG...]: KIND is sockhold, circus or
# circus-warmup (a warmup_delay of the boot time, for the sequential
# reload); sets sup_pid and port, returns once N workers run.
start_supervisor() {
    local kind=$1 n=$2 log=$3
    shift 3
    if [ "$kind" = sockhold ]; then
        start_sockhold "$log" --workers "$n" ${sockhold_opts[@]+"${sockhold_opts[@]}"} -- "$server" "$@"
    else
        local warmup=0
        # circus takes whole seconds here: the boot time, rounded up.
        [ "$kind" = circus-warmup ] && warmup=$(( (boot_ms + 999) / 1000 ))
        port=$(free_port)
        cat > "$tmp/circus$instance.ini" <<INI
[circus]
endpoint = ipc://$tmp/circus$instance.ctl
pubsub_endpoint = ipc://$tmp/circus$instance.pub
statsd = False

[watcher:srv]
cmd = $server
args = --fd \$(circus.sockets.web) $*
use_sockets = True
numprocesses = $n
warmup_delay = $warmup
graceful_timeout = 10

[socket:web]
host = 127.0.0.1
port = $port
INI
        "$venv/bin/circusd" "$tmp/circus$instance.ini" >"$log" 2>&1 &
        sup_pid=$!
    fi
    local count=0
    for _ in $(seq 300); do
        count=$(workers_of "$sup_pid" | wc -l)
        [ "$count" -eq "$n" ] && break
        kill -0 "$sup_pid" 2>/dev/null || break
        sleep 0.05
    done
    [ "$count" -eq "$n" ] || { echo "workers.sh: $kind never had $n workers:" >&2; cat "$log" >&2; exit 70; }
}

# utime + stime of the given pids, in clock ticks (proc(5) fields 14, 15;
# the comm of these processes has no spaces).
cpu_ticks() {
    local pid total=0 t
    for pid in "$@"; do
        t=$(awk '{print $14 + $15}' "/proc/$pid/stat" 2>/dev/null || echo 0)
        total=$((total + t))
    done
    echo "$total"
}

# ---------------------------------------------------------------- part 1
# The 4 rows run at once, each on its port; wrk visits them in turn, one
# short slice each per round, so that the rows compared in a round see
# about the same background load. An idle row costs nothing: its workers
# wait in ppoll(2).
rows=("sockhold 1" "sockhold 2" "circus 1" "circus 2")
row_sup=()
row_port=()
row_workers=()

# throughput_slice ROW ROUND: one wrk run; appends a line to $tmp/throughput.
throughput_slice() {
    local row=$1 round=$2 kind n
    read -r kind n <<< "${rows[$row]}"
    local sup=${row_sup[$row]} port=${row_port[$row]} pids
    read -r -a pids <<< "${row_workers[$row]}"
    local workers_before sup_before workers_after sup_after
    workers_before=$(cpu_ticks "${pids[@]}")
    sup_before=$(cpu_ticks "$sup")
    # wrk: one thread (its CPU is what the workers cannot have), 8
    # connections in flight (the listen queue is never empty), a new
    # connection per request: the kernel hands each to a worker waiting for
    # one, so the load spreads over the workers as it comes.
    local TIMEFORMAT='%U %S'
    { time wrk -t1 -c8 -d"${seconds}s" -H 'Connection: close' "http://127.0.0.1:$port/" \
        >"$tmp/wrk.out" 2>&1; } 2>"$tmp/wrk.time"
    workers_after=$(cpu_ticks "${pids[@]}")
    sup_after=$(cpu_ticks "$sup")
    local rps errors wrk_user wrk_sys
    rps=$(sed -n 's/^Requests\/sec: *\([0-9.]*\).*/\1/p' "$tmp/wrk.out")
    [ -n "$rps" ] || { echo "workers.sh: wrk failed:" >&2; cat "$tmp/wrk.out" >&2; exit 70; }
    errors=$(awk '/Socket errors/ {gsub(",", ""); e += $4 + $6 + $8 + $10} /Non-2xx/ {e += $NF} END {print e + 0}' "$tmp/wrk.out")
    read -r wrk_user wrk_sys < "$tmp/wrk.time"
    echo "$kind $n $round $rps $errors $((workers_after - workers_before)) $((sup_after - sup_before)) $wrk_user $wrk_sys" \
        >> "$tmp/throughput"
}

throughput() {
    echo "Part 1: throughput. cpu_server spends ${burn_ms} ms of CPU per request (at most"
    echo "$(python3 -c "print(round(1000 / $burn_ms))") requests/s per worker); wrk -t1 -c8, a new connection per request;"
    echo "the 4 rows run at once, $rounds rounds of a ${seconds} s slice each, in rotating order."
    echo "Load average before: $(load_average)"
    local row round i kind n
    for row in 0 1 2 3; do
        read -r kind n <<< "${rows[$row]}"
        instance=$row
        start_supervisor "$kind" "$n" "$tmp/tp-$row.log" --burn-ms "$burn_ms"
        running+=("$sup_pid")
        row_sup+=("$sup_pid")
        row_port+=("$port")
        row_workers+=("$(workers_of "$sup_pid" | tr '\n' ' ')")
        sup_pid=
    done
    sleep 0.5
    : > "$tmp/throughput"
    for round in $(seq "$rounds"); do
        printf '  round %s:' "$round"
        for i in 0 1 2 3; do
            row=$(( (i + round - 1) % 4 ))
            throughput_slice "$row" "$round"
            printf ' %s %s' "${rows[$row]}" "$(tail -1 "$tmp/throughput" | cut -d' ' -f4)"
        done
        echo
    done
    for sup_pid in "${running[@]}"; do stop_supervisor; done
    running=()
    echo "Load average after: $(load_average)"
    echo
    PYTHONPATH="$root/benches" python3 - "$tmp/throughput" "$seconds" "$(getconf CLK_TCK)" "$circus_version" <<'PY'
import statistics, sys
from bench_clients import print_table
path, seconds, tck, circus_version = sys.argv[1], float(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
rows = {}
for line in open(path):
    kind, n, rnd, rps, errors, worker_ticks, sup_ticks, wrk_user, wrk_sys = line.split()
    rows.setdefault((kind, int(n)), []).append(dict(
        round=int(rnd), rps=float(rps), errors=int(errors),
        workers_cores=int(worker_ticks) / tck / seconds,
        sup_ms_per_s=int(sup_ticks) * 1000 / tck / seconds,
        wrk_cores=(float(wrk_user) + float(wrk_sys)) / seconds))
med = lambda key, rs: statistics.median(r[key] for r in rs)
lines = [("supervisor", "workers", "requests/s (median)", "min - max", "errors",
          "workers' CPU, cores", "CPU ms / request", "wrk CPU, cores", "supervisor CPU ms/s")]
for (kind, n), rs in rows.items():
    label = kind if kind == "sockhold" else f"circus {circus_version}"
    lines.append((label, str(n), f"{med('rps', rs):.0f}",
                  f"{min(r['rps'] for r in rs):.0f} - {max(r['rps'] for r in rs):.0f}",
                  str(sum(r["errors"] for r in rs)), f"{med('workers_cores', rs):.2f}",
                  f"{statistics.median(r['workers_cores'] * 1000 / r['rps'] for r in rs):.2f}",
                  f"{med('wrk_cores', rs):.2f}", f"{med('sup_ms_per_s', rs):.0f}"))
print_table(lines)
print()
for kind in ("sockhold", "circus"):
    one = {r["round"]: r["rps"] for r in rows[(kind, 1)]}
    two = {r["round"]: r["rps"] for r in rows[(kind, 2)]}
    ratios = [two[k] / one[k] for k in sorted(one) if k in two]
    print(f"{kind}: workers 2 / workers 1 = {statistics.median(ratios):.2f} "
          f"(median of the per-round ratios: {' '.join(f'{x:.2f}' for x in ratios)}; goal >= 1.7)")
s2 = {r["round"]: r["rps"] for r in rows[("sockhold", 2)]}
c2 = {r["round"]: r["rps"] for r in rows[("circus", 2)]}
print(f"sockhold / circus at 2 workers = {statistics.median(s2[k] / c2[k] for k in s2):.2f}")
PY
    cat <<'NOTE'

Nothing is pinned: the 2 workers, wrk, the supervisor and the kernel's
network work share the 2 cores, as they would on a real host; pinning wrk
to one core would only choose which worker shares a core with it. So 2
workers have 2 cores less what wrk and the kernel take (the wrk column;
the kernel's part of each connection is in the workers' CPU): the ratio's
ceiling is a little under 2. "CPU ms / request" at the burn (plus the
connection's cost) says each request cost the same under every row; a
ratio under 1.7 with "workers' CPU" well under 2 cores comes from cores
the workers did not get, not from the supervisor: with
sched_autogroup_enabled = 1, everything this script starts is one
scheduling group, which gets one share of the CPU against each busy
session on the machine, however many workers it runs (see the load
average).
NOTE
    echo "sched_autogroup_enabled: $(cat /proc/sys/kernel/sched_autogroup_enabled 2>/dev/null || echo unknown)"
}

# ---------------------------------------------------------------- part 2
# reload_row LABEL KIND [sockhold option...]: 4 workers booting $boot_ms,
# $reloads reloads under load; the result goes to $tmp/reload-N.json.
reload_results=()
reload_row() {
    local label=$1 kind=$2
    shift 2
    local key=${#reload_results[@]} how
    local log=$tmp/reload-$key.log out=$tmp/reload-$key.json
    local server_args=(--burn-ms 1 --boot-ms "$boot_ms")
    if [ "$kind" = sockhold ]; then
        local saved=("${sockhold_opts[@]+"${sockhold_opts[@]}"}")
        sockhold_opts=(${saved[@]+"${saved[@]}"} "$@")
        start_supervisor sockhold 4 "$log" "${server_args[@]}"
        sockhold_opts=(${saved[@]+"${saved[@]}"})
        how=(--signal HUP)
    else
        start_supervisor "$kind" 4 "$log" "${server_args[@]}"
        how=(--command "$venv/bin/circusctl --endpoint ipc://$tmp/circus$instance.ctl reload srv $*")
    fi
    # Long enough for a reload that starts the new workers one at a time.
    local period
    period=$(python3 -c "print(max(6, 4 * $boot_ms / 1000 + 2))")
    run_client python3 "$client" run --supervisor-pid "$sup_pid" --port "$port" --workers 4 \
        --boot-ms "$boot_ms" "${how[@]}" --reloads "$reloads" --period "$period" \
        --rate "$rate" --label "$label" --out "$out" \
        ${KEEP_RESULTS:+--records "$KEEP_RESULTS/reload-$key.records"} \
        || { echo "workers.sh: $label failed; its log:" >&2; cat "$log" >&2; exit 70; }
    reload_results+=("$out")
    stop_supervisor
}

reload_part() {
    echo "Part 2: reloads of 4 workers that boot for $boot_ms ms (sleep, then accept;"
    echo "no READY=1), $reloads reloads under $rate new connections/s (1 ms of CPU each)."
    echo "Load average before: $(load_average)"
    # The default is a rolling reload, one new worker at a time; a surge
    # of 4 starts all four new workers at once.
    reload_row "sockhold (rolling, --reload-surge 1)" sockhold
    reload_row "sockhold --reload-surge 4" sockhold --reload-surge 4
    reload_row "circus reload" circus
    reload_row "circus reload --sequential" circus --sequential
    reload_row "circus reload --sequential, warmup_delay=boot" circus-warmup --sequential
    echo "Load average after: $(load_average)"
    echo
    python3 "$client" table "${reload_results[@]}"
    [ -z "${KEEP_RESULTS:-}" ] || cp "${reload_results[@]}" "$KEEP_RESULTS"/
    cat <<NOTE

Times are from the SIGHUP (sockhold) or from the start of circusctl
(circus: that includes circusctl's own start-up, a Python program, which
"first new" shows: when the first new worker appears) to the first new
worker, and to the first and the last old worker's exit, seen from outside
(pidfds); "/ boot": last old gone over the workers' boot ($boot_ms ms);
supervisor CPU: its own (circusd, or sockhold with its readiness looks).
Latencies are those of connections started from the first reload to 1 s
after the last; "steady": the 2 s of load before the first.
NOTE
}

echo "workers.sh: sockhold $("$sockhold" --version | cut -d' ' -f2) ${SOCKHOLD_OPTS:+(SOCKHOLD_OPTS: $SOCKHOLD_OPTS) }beside circus $circus_version; $(nproc) CPUs; load average $(load_average)"
echo
case "$only" in ""|throughput) throughput; echo ;; esac
case "$only" in ""|reload) reload_part ;; esac
