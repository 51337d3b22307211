#!/usr/bin/env bash
# Zero-downtime reload benchmark: sockhold side by side with start_server
# (Server::Starter, Debian's libserver-starter-perl) on the same test server.
# See benches/README.md.
# Usage: benches/reload.sh [--reloads N] [--workers N] [--period SECONDS] [--only TEXT]
#   --reloads 20, --workers 4 (client threads), --period 2 (seconds between SIGHUPs, at
#   least); --only runs just the rows whose "scenario supervisor" contains TEXT.
set -euo pipefail

reloads=20
workers=4
period=2
only=
while [ $# -gt 0 ]; do
    case "$1" in
        --reloads) reloads="$2"; shift 2 ;;
        --workers) workers="$2"; shift 2 ;;
        --period) period="$2"; shift 2 ;;
        --only) only="$2"; shift 2 ;;
        -h|--help) sed -n '2,7p' "$0"; exit 0 ;;
        *) echo "reload.sh: unknown argument '$1' (see --help)" >&2; exit 64 ;;
    esac
done

root=$(cd "$(dirname "$0")/.." && pwd)
target=${CARGO_TARGET_DIR:-$root/target}
sockhold=$target/release/sockhold
child=$target/release/test_child
client=$root/benches/reload_client.py

if command -v cargo >/dev/null; then
    # test_child is built only with its feature (Cargo.toml).
    (cd "$root" && cargo build --release --bins --features test-child --quiet)
fi
for bin in "$sockhold" "$child"; do
    [ -x "$bin" ] || { echo "reload.sh: $bin is missing (cargo build --release --bins --features test-child)" >&2; exit 69; }
done
command -v start_server >/dev/null || {
    echo "reload.sh: start_server is missing (apt-get install libserver-starter-perl)" >&2
    exit 69
}
command -v python3 >/dev/null || { echo "reload.sh: python3 is missing" >&2; exit 69; }

tmp=$(mktemp -d "${TMPDIR:-/tmp}/sockhold-bench.XXXXXX")
sup_pid=
client_pid=

# Stop the supervisor we started (and, if it does not go, its children), by pid.
stop_supervisor() {
    [ -n "$sup_pid" ] || return 0
    local kids=""
    kids=$(cat "/proc/$sup_pid/task/$sup_pid/children" 2>/dev/null || true)
    kill -TERM "$sup_pid" 2>/dev/null || true
    for _ in $(seq 100); do
        kill -0 "$sup_pid" 2>/dev/null || break
        sleep 0.05
    done
    if kill -0 "$sup_pid" 2>/dev/null; then
        echo "reload.sh: supervisor $sup_pid ignored TERM; killing it" >&2
        kill -KILL "$sup_pid" $kids 2>/dev/null || true
    fi
    wait "$sup_pid" 2>/dev/null || true
    sup_pid=
}
cleanup() {
    if [ -n "$client_pid" ]; then
        kill -TERM "$client_pid" 2>/dev/null || true
        wait "$client_pid" 2>/dev/null || true
    fi
    stop_supervisor
    rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# run_one SCENARIO LABEL READY_AFTER_MS SUPERVISOR [SOCKHOLD_OPTION...]
run_one() {
    local scenario=$1 label=$2 ready_after=$3 supervisor=$4
    shift 4
    case "$scenario $label" in *"$only"*) ;; *) return 0 ;; esac
    local key=${#results[@]}
    local log=$tmp/$key.log port
    local child_cmd=("$child" --graceful --ready-after "$ready_after")
    if [ "$supervisor" = sockhold ]; then
        "$sockhold" -l 127.0.0.1:0 "$@" -- "${child_cmd[@]}" 2>"$log" &
        sup_pid=$!
        port=
        for _ in $(seq 200); do
            port=$(sed -n 's/^sockhold: listening on tcp 127\.0\.0\.1:\([0-9]*\) .*/\1/p' "$log")
            [ -n "$port" ] && break
            kill -0 "$sup_pid" 2>/dev/null || break
            sleep 0.05
        done
        [ -n "$port" ] || { echo "reload.sh: sockhold did not start:" >&2; cat "$log" >&2; exit 70; }
    else
        port=$(free_port)
        start_server --port="127.0.0.1:$port" --pid-file="$tmp/ss.pid" \
            --status-file="$tmp/ss.status" -- "${child_cmd[@]}" >"$log" 2>&1 &
        sup_pid=$!
    fi
    # In the background so that a signal to this script is handled at once
    # (bash runs traps only between foreground commands).
    python3 "$client" run --supervisor-pid "$sup_pid" --port "$port" \
        --reloads "$reloads" --workers "$workers" --period "$period" \
        --scenario "$scenario" --label "$label" --out "$tmp/$key.json" &
    client_pid=$!
    wait "$client_pid" \
        || { echo "reload.sh: $scenario $label failed; its log:" >&2; cat "$log" >&2; exit 70; }
    client_pid=
    results+=("$tmp/$key.json")
    stop_supervisor
}

results=()
echo "reload.sh: $reloads reloads per run, $workers client workers, $(nproc) CPUs"
# (a) the child serves and sends READY=1 at once.
run_one a-ready-at-once sockhold 0 sockhold
run_one a-ready-at-once start_server 0 start_server
# (b) the child boots for 1.5 s, then sends READY=1 and serves.
run_one b-boots-1.5s "sockhold --ready notify" 1500 sockhold --ready notify
run_one b-boots-1.5s start_server 1500 start_server
# For reference: sockhold's default readiness (1 s, or an earlier READY=1)
# behaves like start_server's fixed wait when the child needs longer.
run_one b-boots-1.5s "sockhold --ready 1s" 1500 sockhold --ready 1s

echo
python3 "$client" table --slowest "${results[@]}"
