#!/usr/bin/env bash
# PID 1 behaviour: sockhold side by side with tini and dumb-init, each run as
# PID 1 of a new PID namespace (unshare --pid --fork --mount-proc, as a
# container runtime does) through the same scenarios:
#   orphans  a child that leaves 20 orphans behind: zombies left after 1 s
#   term     TERM from outside to a child that exits on TERM: exit status
#   stubborn TERM to a child that ignores TERM: exit status and time to exit
#            (cut at 15 s: a runtime would SIGKILL the container there)
#   left     TERM to a child that left a TERM-aware worker behind: whether
#            the worker got TERM (graceful) before the namespace ended
# Needs root. Usage: benches/pid1.sh
set -euo pipefail

# shellcheck source=benches/lib.sh
. "$(dirname "$0")/lib.sh"
parse_options -- "$@"
build_release sockhold
[ "$(id -u)" = 0 ] || die 77 "needs root (unshare --pid)"
require_programs "tini dumb-init util-linux" tini dumb-init unshare

make_temp_dir pid1
ns_pid=
cutter=
# unshare runs with --kill-child: SIGKILL to it ends the whole namespace.
# The cutter (see stubborn below) goes first, so that it cannot fire.
stop_script_processes() {
    if [ -n "$cutter" ]; then kill "$cutter" 2>/dev/null || true; wait "$cutter" 2>/dev/null || true; fi
    if [ -n "$ns_pid" ]; then kill -KILL "$ns_pid" 2>/dev/null || true; fi
}

# The supervisor's command line before the child's.
supervisor_args() {
    case "$1" in
        sockhold) echo "$sockhold -q --ready 0 --restart never --stop-timeout 3s --" ;;
        tini) echo "tini --" ;;
        dumb-init) echo "dumb-init" ;;
    esac
}

# Starts `unshare ... SUPERVISOR CHILD...` in the background; sets ns_pid
# (unshare's pid) and init_pid (the supervisor, PID 1 inside).
start() {
    local supervisor=$1 supervisor_command; shift
    # Split here, not in the background job: a $(...) there is a child of
    # the job that the loop below could take for the supervisor.
    read -r -a supervisor_command <<< "$(supervisor_args "$supervisor")"
    unshare --pid --fork --mount-proc --kill-child -- "${supervisor_command[@]}" "$@" \
        2>"$tmp/stderr" &
    ns_pid=$!
    init_pid=
    for _ in $(seq 100); do
        init_pid=$(children_of "$ns_pid" | awk '{print $1}')
        [ -n "$init_pid" ] && break
        sleep 0.02
    done
}

# Waits for unshare to end; sets status and took (seconds since $1).
finish() {
    local start=$1
    status=0
    wait "$ns_pid" 2>/dev/null || status=$?
    ns_pid=
    took=$(awk -v now="$(date +%s.%N)" -v t0="$start" 'BEGIN { printf "%.1f", now - t0 }')
}

zombies_under() {
    local count=0 pid
    for pid in $(children_of "$1"); do
        [ "$(awk '{print $3}' "/proc/$pid/stat" 2>/dev/null)" = Z ] && count=$((count + 1))
    done
    echo "$count"
}

printf '| %-10s | %-14s | %-11s | %-22s | %-26s |\n' \
    supervisor "zombies left" "TERM: exit" "ignores TERM: exit, s" "left-behind worker"
printf '|%s|%s|%s|%s|%s|\n' ------------ ---------------- ------------- \
    ------------------------ ----------------------------
for supervisor in sockhold tini dumb-init; do
    # orphans
    # shellcheck disable=SC2016 # the $(...) is the child shell's
    start "$supervisor" sh -c 'for i in $(seq 20); do (sleep 0.1 &); done; exec sleep 1000'
    sleep 1
    zombies=$(zombies_under "$init_pid")
    kill -TERM "$init_pid"; finish "$(date +%s.%N)"

    # term
    start "$supervisor" sleep 1000
    sleep 0.5
    kill -TERM "$init_pid"
    finish "$(date +%s.%N)"
    term_status=$status

    # stubborn
    start "$supervisor" sh -c 'trap "" TERM; while :; do sleep 1; done'
    sleep 0.5
    t0=$(date +%s.%N)
    kill -TERM "$init_pid"
    # The cutter's sleep is its own child: TERM to the cutter must end it
    # too, or it would outlive the script.
    ( trap 'kill "$sleeper" 2>/dev/null; exit 0' TERM
      sleep 15 & sleeper=$!
      wait "$sleeper" && kill -KILL "$ns_pid" 2>/dev/null ) &
    cutter=$!
    finish "$t0"
    stubborn_status=$status stubborn_time=$took
    kill "$cutter" 2>/dev/null || true; wait "$cutter" 2>/dev/null || true
    cutter=
    [ "$stubborn_status" = 137 ] && [ "${stubborn_time%.*}" -ge 15 ] && stubborn_status="cut"

    # left: the worker writes a mark when it gets TERM
    rm -f "$tmp/graceful"
    start "$supervisor" sh -c "sh -c 'trap \"echo > $tmp/graceful; exit 0\" TERM; while :; do sleep 0.1; done' & exec sleep 1000"
    sleep 0.5
    kill -TERM "$init_pid"
    finish "$(date +%s.%N)"
    if [ -e "$tmp/graceful" ]; then left="got TERM"; else left="SIGKILLed by the kernel"; fi

    printf '| %-10s | %14s | %11s | %-22s | %-26s |\n' "$supervisor" "$zombies" \
        "$term_status" "$stubborn_status after ${stubborn_time}s" "$left"
done
