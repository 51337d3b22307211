#!/usr/bin/env bash
# Per-connection servers side by side, in one run, on one machine:
#
#   sockhold --accept --inetd          (release build of this tree)
#   tcpserver                          (ucspi-tcp)
#   systemd-socket-activate --accept --inetd
#   xinetd                             (config in a temp dir, foreground)
#   accept_loop                        (benches/accept_loop.c: accept, vfork,
#                                       exec; no limits, no environment: the ceiling)
#
# Part 1, throughput: connections per second served end to end (connect,
# send a line, read the echo, close) with `cat` as the child, by
# benches/connect_load.c (fresh connections; keep-alive tools such as wrk
# measure something else). Each round runs every server once, in a rotating
# order; the table gives the median over the rounds, and sockhold's ratio to
# the ceiling and to tcpserver as the median of the per-round ratios (each
# round's figures are taken close together, so background noise cancels).
#
# Part 2, the concurrency limit under a flood: FLOOD clients connect at once
# and each holds its connection HOLD_MS after the echo; every server is
# given a limit of LIMIT children where it has one. "most alive" is the
# most connections that had their echo and were open at once, which with
# `cat` is the number of children alive.
#
# Usage: benches/inetd.sh            (needs: cc, python3, ucspi-tcp, xinetd, systemd)
# Settings (environment): ROUNDS=7 DURATION=3 CLIENTS=4 FLOOD=200 HOLD_MS=300 LIMIT=16

set -euo pipefail
# shellcheck source=benches/lib.sh
. "$(dirname "$0")/lib.sh"
parse_options -- "$@"

ROUNDS=${ROUNDS:-7}
DURATION=${DURATION:-3}
CLIENTS=${CLIENTS:-4}
FLOOD=${FLOOD:-200}
HOLD_MS=${HOLD_MS:-300}
LIMIT=${LIMIT:-16}

build_release sockhold
require_programs "ucspi-tcp xinetd systemd gcc python3" cc python3 tcpserver xinetd systemd-socket-activate
CAT=$(command -v cat)

make_temp_dir bench
cc -O2 -Wall -o "$tmp/accept_loop" "$root/benches/accept_loop.c"
cc -O2 -Wall -pthread -o "$tmp/connect_load" "$root/benches/connect_load.c"

# start NAME PORT LIMIT: starts one server in the background ("" = no limit).
start() {
    local name=$1 port=$2 limit=$3
    case $name in
    sockhold)
        "$sockhold" -q --accept --inetd --max-connections "${limit:-100000}" \
            -l "127.0.0.1:$port" -- "$CAT" &
        ;;
    tcpserver)
        tcpserver -RHl0 -c "${limit:-100000}" 127.0.0.1 "$port" "$CAT" &
        ;;
    systemd-socket-activate)
        # No limit option: it spawns for every connection.
        systemd-socket-activate --accept --inetd -l "127.0.0.1:$port" "$CAT" 2>/dev/null &
        ;;
    xinetd)
        cat >"$tmp/xinetd-$port.conf" <<EOF
service bench-$port
{
    type        = UNLISTED
    socket_type = stream
    protocol    = tcp
    wait        = no
    user        = root
    bind        = 127.0.0.1
    port        = $port
    server      = $CAT
    instances   = ${limit:-UNLIMITED}
    per_source  = UNLIMITED
    cps         = 1000000 1
    log_type    = FILE /dev/null
}
EOF
        xinetd -dontfork -f "$tmp/xinetd-$port.conf" -pidfile "$tmp/xinetd-$port.pid" &
        ;;
    accept_loop)
        "$tmp/accept_loop" "$port" "$CAT" &
        ;;
    esac
    background_pids+=($!)
    wait_until_port_answers "$port"
}

servers=(sockhold tcpserver systemd-socket-activate xinetd accept_loop)

echo "== throughput: $ROUNDS rounds x ${DURATION}s per server, $CLIENTS clients, cat as the child"
declare -A port
for name in "${servers[@]}"; do
    port[$name]=$(free_port)
    start "$name" "${port[$name]}" ""
    # Warm-up: page cache, first-connection costs.
    "$tmp/connect_load" -c "$CLIENTS" -d 1 127.0.0.1 "${port[$name]}" >/dev/null
done

: >"$tmp/rates"
for round in $(seq "$ROUNDS"); do
    # Rotate the order so that no server always runs first or last.
    order=("${servers[@]:round % ${#servers[@]}}" "${servers[@]:0:round % ${#servers[@]}}")
    for name in "${order[@]}"; do
        line=$("$tmp/connect_load" -c "$CLIENTS" -d "$DURATION" 127.0.0.1 "${port[$name]}")
        echo "round $round  $name  $line"
        echo "$round $name $line" >>"$tmp/rates"
    done
done
stop_background

echo
echo "== concurrency limit under a flood: $FLOOD clients at once, each holding ${HOLD_MS}ms, limit $LIMIT"
: >"$tmp/flood"
for name in "${servers[@]}"; do
    p=$(free_port)
    start "$name" "$p" "$LIMIT"
    line=$("$tmp/connect_load" -c "$FLOOD" -n "$FLOOD" -h "$HOLD_MS" -d 120 127.0.0.1 "$p")
    echo "$name  $line"
    echo "$name $line" >>"$tmp/flood"
    stop_background
done

echo
python3 - "$tmp/rates" "$tmp/flood" "$LIMIT" <<'EOF'
import re, statistics, sys
from collections import defaultdict

rates_file, flood_file, limit = sys.argv[1], sys.argv[2], sys.argv[3]
field = lambda line, key: re.search(key + r"=([\d.]+)", line).group(1)

rates = defaultdict(dict)
failures = defaultdict(int)
for line in open(rates_file):
    round_, name = line.split()[:2]
    rates[name][round_] = float(field(line, "rate"))
    failures[name] += int(field(line, "failed"))

names = ["sockhold", "tcpserver", "systemd-socket-activate", "xinetd", "accept_loop"]
def ratio(a, b):
    per_round = [rates[a][r] / rates[b][r] for r in rates[a] if rates[b].get(r)]
    return statistics.median(per_round)

print("| server | connections/s (median) | min - max | failed | sockhold / this |")
print("|---|---:|---:|---:|---:|")
for name in names:
    values = list(rates[name].values())
    cell = "1.00" if name == "sockhold" else f"{ratio('sockhold', name):.2f}"
    print(f"| {name} | {statistics.median(values):.0f} | {min(values):.0f} - {max(values):.0f} "
          f"| {failures[name]} | {cell} |")
print()
print(f"sockhold / accept_loop (the ceiling): {ratio('sockhold', 'accept_loop'):.2f} (goal >= 0.95)")
print(f"sockhold / tcpserver: {ratio('sockhold', 'tcpserver'):.2f} (goal >= 1.0)")
print()
limits = {
    "sockhold": f"--max-connections {limit}",
    "tcpserver": f"-c {limit}",
    "systemd-socket-activate": "(no limit option)",
    "xinetd": f"instances = {limit}",
    "accept_loop": "(none)",
}
print("| server | limit | most alive | served | failed | took |")
print("|---|---|---:|---:|---:|---:|")
for line in open(flood_file):
    name = line.split()[0]
    print(f"| {name} | {limits[name]} | {field(line, 'max_held')} | {field(line, 'ok')} "
          f"| {field(line, 'failed')} | {float(field(line, 'seconds')):.1f}s |")
EOF
