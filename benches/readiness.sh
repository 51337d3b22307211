#!/usr/bin/env bash
# Readiness benchmark: reloads of a child that boots for 3 s and never sends
# READY=1, under sockhold's default readiness (auto: seen accepting), sockhold
# --ready 1s, and start_server (Server::Starter, Debian's
# libserver-starter-perl), side by side in one run. See benches/README.md.
# Usage: benches/readiness.sh [--reloads N] [--workers N] [--boot MS] [--period SECONDS]
#                             [--steady SECONDS] [--only TEXT]
#   --reloads 10, --workers 4 (client threads), --boot 3000 (the child's boot time),
#   --period 4 (seconds between SIGHUPs, at least), --steady 3 (seconds of load before
#   the first SIGHUP); --only runs just the rows whose supervisor contains TEXT.
set -euo pipefail

reloads=10
workers=4
boot=3000
period=4
steady=3
only=
while [ $# -gt 0 ]; do
    case "$1" in
        --reloads) reloads="$2"; shift 2 ;;
        --workers) workers="$2"; shift 2 ;;
        --boot) boot="$2"; shift 2 ;;
        --period) period="$2"; shift 2 ;;
        --steady) steady="$2"; shift 2 ;;
        --only) only="$2"; shift 2 ;;
        -h|--help) sed -n '2,11p' "$0"; exit 0 ;;
        *) echo "readiness.sh: unknown argument '$1' (see --help)" >&2; exit 64 ;;
    esac
done

root=$(cd "$(dirname "$0")/.." && pwd)
target=${CARGO_TARGET_DIR:-$root/target}
sockhold=$target/release/sockhold
child=$target/release/test_child
client=$root/benches/reload_client.py

if command -v cargo >/dev/null; then
    (cd "$root" && cargo build --release --bins --features test-child --quiet)
fi
for bin in "$sockhold" "$child"; do
    [ -x "$bin" ] || { echo "readiness.sh: $bin is missing (cargo build --release --bins --features test-child)" >&2; exit 69; }
done
command -v start_server >/dev/null || {
    echo "readiness.sh: start_server is missing (apt-get install libserver-starter-perl)" >&2
    exit 69
}
command -v python3 >/dev/null || { echo "readiness.sh: python3 is missing" >&2; exit 69; }

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
        echo "readiness.sh: supervisor $sup_pid ignored TERM; killing it" >&2
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

# run_one LABEL SUPERVISOR [SOCKHOLD_OPTION...]
run_one() {
    local label=$1 supervisor=$2
    shift 2
    case "$label" in *"$only"*) ;; *) return 0 ;; esac
    local key=${#results[@]}
    local log=$tmp/$key.log port
    # Boots, then serves; never sends READY=1.
    local child_cmd=("$child" --graceful --boot "$boot")
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
        [ -n "$port" ] || { echo "readiness.sh: sockhold did not start:" >&2; cat "$log" >&2; exit 70; }
    else
        port=$(free_port)
        start_server --port="127.0.0.1:$port" --pid-file="$tmp/ss.pid" \
            --status-file="$tmp/ss.status" -- "${child_cmd[@]}" >"$log" 2>&1 &
        sup_pid=$!
    fi
    # In the background so that a signal to this script is handled at once
    # (bash runs traps only between foreground commands).
    python3 "$client" run --supervisor-pid "$sup_pid" --port "$port" \
        --reloads "$reloads" --workers "$workers" --period "$period" --steady "$steady" \
        --scenario "boots-${boot}ms" --label "$label" --out "$tmp/$key.json" &
    client_pid=$!
    wait "$client_pid" \
        || { echo "readiness.sh: $label failed; its log:" >&2; cat "$log" >&2; exit 70; }
    client_pid=
    results+=("$tmp/$key.json")
    stop_supervisor
}

results=()
echo "readiness.sh: a child that boots ${boot} ms without READY=1; $reloads reloads per run," \
    "$workers client workers, $(nproc) CPUs"
# sockhold's default: ready once seen accepting on the socket.
run_one "sockhold (auto)" sockhold
# A fixed delay, shorter than the boot: the old child stops too early.
run_one "sockhold --ready 1s" sockhold --ready 1s
# start_server's fixed --interval (1 s): the same.
run_one start_server start_server

echo
python3 "$client" table --readiness --slowest "${results[@]}"
