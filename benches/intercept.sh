#!/usr/bin/env bash
# --intercept-bind's cost: steady throughput of lighttpd (which binds its
# own port) run directly and under sockhold --intercept-bind, side by side
# in one run, alternating (wrk, new connection reuse as wrk does: keep-alive,
# 2 threads, 32 connections), and the cost of one intercepted bind (from
# strace -T of the server's bind under sockhold against without).
# Prints requests/s per row and the ratio. See benches/README.md.
# Usage: benches/intercept.sh [--seconds N] [--rounds N]
set -euo pipefail
# shellcheck source=benches/lib.sh
. "$(dirname "$0")/lib.sh"
seconds=5
rounds=3
parse_options seconds rounds -- "$@"
build_release sockhold
require_programs "lighttpd wrk python3" lighttpd wrk python3
make_temp_dir intercept
port=$(free_port)
write_lighttpd_conf "$port"
echo hello > "$tmp/www/index.html"
measure() {
    wrk -t2 -c32 -d"${seconds}s" "http://127.0.0.1:$port/index.html" | awk '/Requests\/sec/ {print $2}'
}
direct=()
intercepted=()
for _ in $(seq "$rounds"); do
    lighttpd -D -f "$tmp/lighttpd.conf" & background_pids+=($!)
    wait_until_port_answers "$port"; direct+=("$(measure)"); stop_background
    "$sockhold" -q -l "127.0.0.1:$port" --intercept-bind -- lighttpd -D -f "$tmp/lighttpd.conf" & background_pids+=($!)
    wait_until_port_answers "$port"; intercepted+=("$(measure)"); stop_background
done
# One bind: a Python loop of socket() + bind() + close(), run directly
# (port 0) and under sockhold --intercept-bind (the held port: answered by
# sockhold with the held socket; port 0: trapped, then run as it is).
cat > "$tmp/binds.py" <<'PY'
import os, socket, sys, time
port, count = int(sys.argv[1]), 2000
def per_bind(target):
    started = time.perf_counter()
    for _ in range(count):
        s = socket.socket()
        s.bind(("127.0.0.1", target))
        s.close()
    return (time.perf_counter() - started) / count * 1e6
print(f"{per_bind(port):.1f} {per_bind(0):.1f}" if port else f"{per_bind(0):.1f}")
PY
bind_direct=$(python3 "$tmp/binds.py" 0)
read -r bind_held bind_passed < <("$sockhold" -q -l "127.0.0.1:$port" --intercept-bind --restart never \
    --ready 1ms -- python3 "$tmp/binds.py" "$port" 2>/dev/null)
python3 - "${direct[*]}" "${intercepted[*]}" <<'PY'
import statistics, sys
direct = [float(x) for x in sys.argv[1].split()]
intercepted = [float(x) for x in sys.argv[2].split()]
d, i = statistics.median(direct), statistics.median(intercepted)
print("| lighttpd | requests/s (median of rounds) | rounds |")
print("|---|---|---|")
print(f"| run directly | {d:.0f} | {' '.join(f'{x:.0f}' for x in direct)} |")
print(f"| under sockhold --intercept-bind | {i:.0f} | {' '.join(f'{x:.0f}' for x in intercepted)} |")
print(f"\nratio intercepted / direct: {i / d:.3f}")
PY
echo "one socket()+bind()+close(): ${bind_direct} us directly; under --intercept-bind ${bind_held} us for the held port (sockhold installs its socket), ${bind_passed} us for port 0 (trapped, then run)"

