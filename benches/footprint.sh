#!/usr/bin/env bash
# Idle footprint: sockhold side by side with tini, dumb-init, start_server
# and systemd-socket-activate, each supervising an idle child (`sleep
# infinity`; for sockhold an idle server, test_child blocked in accept(2),
# which `--ready auto` sees ready: a child that never takes from the socket
# is looked at until --ready-timeout, as a server still booting would be).
# For each supervisor process: resident memory (VmRSS)
# (VmRSS; RssAnon is the part that is the process's own, the rest being
# file pages such as libc's, shared with every process that maps them) and
# wakeups (voluntary + involuntary context switches, all threads) over
# SECONDS of idleness, from /proc/PID/status. Release build.
# Usage: benches/footprint.sh [--seconds N]
set -euo pipefail
# shellcheck source=benches/lib.sh
. "$(dirname "$0")/lib.sh"

seconds=10
# Time every supervisor gets to finish starting before it is measured
# (sockhold's child is ready within milliseconds).
settle=2
parse_options seconds -- "$@"

build_release sockhold
require_programs "tini dumb-init libserver-starter-perl systemd" \
    tini dumb-init start_server systemd-socket-activate
make_temp_dir footprint

# Sum of one field of /proc/PID/task/*/status over every thread.
field_sum() {
    local pid=$1 field=$2
    cat /proc/"$pid"/task/*/status 2>/dev/null | awk -v f="$field:" '$1 == f { s += $2 } END { print s + 0 }'
}
switches() {
    echo $(( $(field_sum "$1" voluntary_ctxt_switches) + $(field_sum "$1" nonvoluntary_ctxt_switches) ))
}
status_kb() {
    awk -v f="$2:" '$1 == f { print $2 }' /proc/"$1"/status
}
threads() {
    awk '$1 == "Threads:" { print $2 }' /proc/"$1"/status
}

# measure LABEL NOTE COMMAND...: start COMMAND, let it settle, measure.
measure() {
    local label=$1 note=$2
    shift 2
    "$@" >/dev/null 2>"$tmp/$label.log" &
    sup_pid=$!
    sleep "$settle"
    if ! kill -0 "$sup_pid" 2>/dev/null; then
        echo "footprint.sh: $label exited early:" >&2
        cat "$tmp/$label.log" >&2
        exit 70
    fi
    local before after
    before=$(switches "$sup_pid")
    sleep "$seconds"
    after=$(switches "$sup_pid")
    printf '| %-24s | %9s | %10s | %7s | %11s | %s |\n' "$label" \
        "$(status_kb "$sup_pid" VmRSS)" "$(status_kb "$sup_pid" RssAnon)" \
        "$(threads "$sup_pid")" "$((after - before))" "$note"
    stop_supervisor
}

echo "Idle supervisors, each with one idle child (sleep infinity; sockhold: an idle server); wakeups over ${seconds}s."
echo
printf '| %-24s | %9s | %10s | %7s | %11s | %s |\n' \
    supervisor "VmRSS kB" "RssAnon kB" threads wakeups notes
printf '|%s|%s|%s|%s|%s|%s|\n' "--------------------------" "-----------" \
    "------------" "---------" "-------------" "-------"
measure sockhold "holds one TCP socket; the child serves it" \
    "$sockhold" -l 127.0.0.1:0 -- "$test_child"
measure tini "-s (subreaper, not PID 1)" \
    tini -s -- sleep infinity
measure dumb-init "" \
    dumb-init sleep infinity
measure start_server "holds one Unix socket (Perl)" \
    start_server --path="$tmp/ss.sock" -- sleep infinity
measure systemd-socket-activate "--accept mode: it execs its child otherwise" \
    systemd-socket-activate -a -l "$tmp/sa.sock" cat
