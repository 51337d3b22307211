#!/usr/bin/env bash
# sockhold in front of examples/server.py: start it, ask it something,
# reload it while a client keeps opening new connections (none fails, a new
# pid answers), then stop it. Runs unattended and exits 0 only if all of
# that happened. Needs bash, python3 and cargo (to build sockhold); set
# SOCKHOLD=/path/to/sockhold to skip the build.
set -euo pipefail
cd "$(dirname "$0")/.."

if [[ -z "${SOCKHOLD:-}" ]]; then
    echo "building sockhold (cargo build)..."
    cargo build --quiet --bin sockhold
    SOCKHOLD="${CARGO_TARGET_DIR:-target}/debug/sockhold"
fi

work=$(mktemp -d)
log="$work/sockhold.log"
touch "$log"
sockhold_pid=""
client_pid=""
shown=0

# Whatever happens, stop what this script started, by pid: the client,
# sockhold, and every child sockhold logged.
cleanup() {
    local pid
    if [[ -n "$client_pid" ]]; then kill -KILL "$client_pid" 2>/dev/null || true; fi
    if [[ -n "$sockhold_pid" ]] && kill -0 "$sockhold_pid" 2>/dev/null; then
        kill -KILL "$sockhold_pid" 2>/dev/null || true
    fi
    for pid in $(sed -n 's/.*generation [0-9]* started: pid \([0-9]*\).*/\1/p' "$log"); do
        kill -KILL "$pid" 2>/dev/null || true
    done
    rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM HUP

fail() {
    show_log
    echo "demo failed: $*" >&2
    exit 1
}

# Prints the log lines that have not been shown yet.
show_log() {
    local total
    total=$(wc -l <"$log")
    if ((total > shown)); then
        sed -n "$((shown + 1)),${total}p" "$log" | sed 's/^/  /'
        shown=$total
    fi
}

# Waits (at most 20 s) for a log line matching the extended regex $1.
wait_for() {
    local deadline=$((SECONDS + 20))
    until grep -qE -- "$1" "$log"; do
        kill -0 "$sockhold_pid" 2>/dev/null || fail "sockhold exited before logging '$1'"
        ((SECONDS < deadline)) || fail "no log line matching '$1' within 20 s"
        sleep 0.05
    done
}

# One HTTP request on a new connection; prints the answer's body.
request() {
    python3 - "$1" <<'EOF'
import sys, urllib.request
with urllib.request.urlopen(f"http://{sys.argv[1]}/", timeout=10) as answer:
    print(answer.read().decode().strip())
EOF
}

step() { printf '\n$ %s\n' "$*"; }

step "sockhold -l 127.0.0.1:0 --ready notify -- python3 examples/server.py &"
"$SOCKHOLD" -l 127.0.0.1:0 --ready notify -- python3 examples/server.py 2>"$log" &
sockhold_pid=$!
wait_for "generation 1 ready"
show_log
address=$(sed -n 's/.*listening on tcp \([0-9.:]*\) (fd 3.*/\1/p' "$log")
[[ -n "$address" ]] || fail "no listening address in the log"

step "GET http://$address/"
first=$(request "$address")
echo "  $first"

# A client that opens a new connection for every request until told to stop,
# and reports how many failed and which pids answered.
python3 - "$address" "$work/stop" "$work/client-started" >"$work/client.out" <<'EOF' &
import os, socket, sys, time
host, port = sys.argv[1].rsplit(":", 1)
stop, started = sys.argv[2], sys.argv[3]
ok = failed = 0
pids = set()
deadline = time.monotonic() + 60
while not os.path.exists(stop) and time.monotonic() < deadline:
    try:
        with socket.create_connection((host, int(port)), timeout=10) as conn:
            conn.sendall(b"GET / HTTP/1.0\r\n\r\n")
            answer = b""
            while chunk := conn.recv(4096):
                answer += chunk
        pids.add(answer.split(b"hello from pid ")[1].split()[0].decode())
        ok += 1
        if ok == 1:
            open(started, "w").close()
    except (OSError, IndexError) as error:
        failed += 1
        print(f"request failed: {error!r}", file=sys.stderr)
print(f"{ok + failed} requests around the reload, {failed} failed, answered by pids {' '.join(sorted(pids))}")
sys.exit(1 if failed or ok == 0 else 0)
EOF
client_pid=$!
deadline=$((SECONDS + 20))
until [[ -e "$work/client-started" ]]; do
    kill -0 "$client_pid" 2>/dev/null || fail "the client stopped before its first answer"
    ((SECONDS < deadline)) || fail "the client got no answer within 20 s"
    sleep 0.05
done

step "kill -HUP $sockhold_pid    # while a client keeps opening new connections"
kill -HUP "$sockhold_pid"
wait_for "generation 1 exited"
show_log
touch "$work/stop"
client_status=0
wait "$client_pid" || client_status=$?
client_pid=""
echo "  client: $(cat "$work/client.out")"
((client_status == 0)) || fail "the client saw failed requests"

step "GET http://$address/"
second=$(request "$address")
echo "  $second"
[[ "${first%% (*}" != "${second%% (*}" ]] || fail "the same pid answered before and after the reload"

step "kill -TERM $sockhold_pid"
kill -TERM "$sockhold_pid"
status=0
wait "$sockhold_pid" || status=$?
sockhold_pid=""
show_log
echo "  sockhold exited with status $status"
((status == 0)) || fail "sockhold should exit 0 after a stop the child honoured"
echo
echo "demo done: a reload with no failed connection, a new pid, a clean stop."
