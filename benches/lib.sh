# shellcheck shell=bash
# What every benchmark script in benches/ does the same way: find this tree
# and its release binaries, check for the peers it runs beside sockhold, keep
# its files in one temporary directory, wait for servers, and stop every
# process it started, by pid, however it exits. Sourced, not run:
#   . "$(dirname "$0")/lib.sh"
# before the script's own work (after `set -euo pipefail`). It sets:
#   bench   the script's name, for messages ("reload.sh: ...")
#   root    this tree; target, sockhold, test_child: the release build in it
#   tmp     "" until make_temp_dir
#   sup_pid, client_pid, background_pids: what the exit trap stops
# A script with processes of its own kind to stop defines
# stop_script_processes; the exit trap calls it.

bench=$(basename "$0")
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
target=${CARGO_TARGET_DIR:-$root/target}
sockhold=$target/release/sockhold
# shellcheck disable=SC2034 # for the scripts that run it
test_child=$target/release/test_child

tmp=
sup_pid=
client_pid=
background_pids=()

# die STATUS MESSAGE: the one way a script gives up, in the form its callers
# (people and .ci) read: "NAME: MESSAGE" on stderr, a sysexits(3) status
# (64 usage, 69 something missing, 70 the benchmark itself failed).
die() {
    local status=$1
    shift
    echo "$bench: $*" >&2
    exit "$status"
}

# print_usage: the script's header comment (from line 2 to the first line
# that is not a comment) is its --help, so the two cannot drift apart.
print_usage() {
    awk 'NR > 1 && !/^#/ { exit } NR > 1 { print }' "$0"
}

# parse_options NAME... -- "$@": the scripts' options are all --NAME VALUE,
# each setting the script's variable of that name (dashes as underscores:
# --boot-ms sets boot_ms), whose default the script has set before; -h or
# --help prints the usage. Anything else is a usage error (64).
parse_options() {
    local names=() name
    while [ "$1" != -- ]; do names+=("$1"); shift; done
    shift
    while [ $# -gt 0 ]; do
        case "$1" in -h|--help) print_usage; exit 0 ;; esac
        name=${1#--}
        name=${name//-/_}
        case " ${names[*]} " in
            *" $name "*) [ "$1" = "--${name//_/-}" ] || die 64 "unknown argument '$1' (see --help)" ;;
            *) die 64 "unknown argument '$1' (see --help)" ;;
        esac
        [ $# -ge 2 ] || die 64 "$1 needs a value (see --help)"
        printf -v "$name" '%s' "$2"
        shift 2
    done
}

# build_release BINARY...: builds this tree's release binaries when cargo
# is here, so that a benchmark never measures a stale sockhold; without
# cargo it uses what is in $target. Then checks that each BINARY (sockhold,
# test_child) is there. Always with the test-child feature, which only adds
# the test_child bin (Cargo.toml): one build serves every script, where a
# build without it would be a second LTO build of sockhold (minutes on a
# busy 2-core machine).
build_release() {
    local build=(cargo build --release --bins --features test-child)
    if command -v cargo >/dev/null; then
        (cd "$root" && "${build[@]}" --quiet)
    fi
    local binary
    for binary in "$@"; do
        [ -x "$target/release/$binary" ] || die 69 "$target/release/$binary is missing (${build[*]})"
    done
}

# require_programs "PACKAGES" PROGRAM...: the peers and tools a benchmark
# runs must all be on PATH before it starts anything; a missing one is
# named with the Debian packages that bring them (69, EX_UNAVAILABLE).
require_programs() {
    local packages=$1 program
    shift
    for program in "$@"; do
        command -v "$program" >/dev/null || die 69 "$program is missing (apt-get install -y $packages)"
    done
}

# make_temp_dir NAME: one directory for every file a run writes (logs,
# configs, results), removed at exit; sets tmp.
make_temp_dir() {
    tmp=$(mktemp -d "${TMPDIR:-/tmp}/sockhold-$1.XXXXXX")
}

# free_port: a TCP port on 127.0.0.1 that nothing listens on now, for peers
# that cannot be told to bind port 0 and say which port they got.
free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# load_average: the 1, 5 and 15 minute load, printed beside figures that
# depend on how busy the machine was.
load_average() { cut -d' ' -f1-3 /proc/loadavg; }

# wait_for_sockhold_port LOG: sockhold started on 127.0.0.1:0 with stderr
# to LOG says which port the kernel gave it; sets port once it has, gives up
# (70) when $sup_pid exits first or after 10 s.
wait_for_sockhold_port() {
    local log=$1
    port=
    for _ in $(seq 200); do
        port=$(sed -n 's/^sockhold: listening on tcp 127\.0\.0\.1:\([0-9]*\) .*/\1/p' "$log")
        [ -n "$port" ] && return 0
        kill -0 "$sup_pid" 2>/dev/null || break
        sleep 0.05
    done
    echo "$bench: sockhold did not start:" >&2
    cat "$log" >&2
    exit 70
}

# wait_for_log LOG TEXT: waits until a line of LOG contains TEXT (a log
# line is the event sockhold reports a state change by); gives up (70)
# after 10 s.
wait_for_log() {
    local log=$1 text=$2
    for _ in $(seq 200); do
        grep -qF -- "$text" "$log" && return 0
        sleep 0.05
    done
    echo "$bench: no '$text' in the log after 10 s:" >&2
    cat "$log" >&2
    exit 70
}

# wait_until_port_answers PORT: waits until something accepts a connection
# on 127.0.0.1:PORT (the probe connection is closed at once); for servers
# that do not log their start. Gives up (70) after 10 s.
wait_until_port_answers() {
    local port=$1
    for _ in $(seq 200); do
        python3 -c "import socket; socket.create_connection(('127.0.0.1', $port), 1).close()" 2>/dev/null \
            && return 0
        sleep 0.05
    done
    die 70 "nothing answers on port $port"
}

# write_lighttpd_conf PORT [LINE...]: $tmp/lighttpd.conf, for lighttpd -D
# -f: serve the files of $tmp/www (made here) on 127.0.0.1:PORT, errors to
# $tmp/lighttpd.log, and the LINEs after that (fastcgi.sh's backend).
write_lighttpd_conf() {
    local port=$1
    shift
    mkdir -p "$tmp/www"
    {
        echo "server.document-root = \"$tmp/www\""
        echo 'server.bind = "127.0.0.1"'
        echo "server.port = $port"
        echo "server.errorlog = \"$tmp/lighttpd.log\""
        if [ $# -gt 0 ]; then printf '%s\n' "$@"; fi
    } > "$tmp/lighttpd.conf"
}

# children_of PID: the pids of PID's children, of every thread (circusd
# has several; a child belongs to the thread that forked it).
children_of() {
    cat /proc/"$1"/task/*/children 2>/dev/null || true
}

# stop_supervisor: TERM to $sup_pid, as a user stopping it would, so that
# it stops its children its own way; if it is still there after
# $supervisor_grace_seconds, SIGKILL it and the children it had, so that
# nothing outlives the benchmark. Clears sup_pid.
supervisor_grace_seconds=5
stop_supervisor() {
    local grace=$supervisor_grace_seconds
    [ -n "$sup_pid" ] || return 0
    local kids
    kids=$(children_of "$sup_pid")
    kill -TERM "$sup_pid" 2>/dev/null || true
    for _ in $(seq $((grace * 20))); do
        kill -0 "$sup_pid" 2>/dev/null || break
        sleep 0.05
    done
    if kill -0 "$sup_pid" 2>/dev/null; then
        echo "$bench: supervisor $sup_pid ignored TERM for ${grace}s; killing it" >&2
        # shellcheck disable=SC2086 # a list of pids
        kill -KILL "$sup_pid" $kids 2>/dev/null || true
    fi
    wait "$sup_pid" 2>/dev/null || true
    sup_pid=
}

# stop_client: TERMs the load client running in the background (clients
# run in the background because bash runs a trap only between foreground
# commands: Ctrl-C then stops the run at once). Clears client_pid.
stop_client() {
    [ -n "$client_pid" ] || return 0
    kill -TERM "$client_pid" 2>/dev/null || true
    wait "$client_pid" 2>/dev/null || true
    client_pid=
}

# run_client COMMAND...: runs a load client in the background and waits
# for it (see stop_client); returns its status.
run_client() {
    "$@" &
    client_pid=$!
    local status=0
    wait "$client_pid" || status=$?
    client_pid=
    return "$status"
}

# stop_background: TERM to every pid in background_pids (servers started
# with `... & background_pids+=($!)`), all at once so that they stop
# together, then waits for each. Clears the list.
stop_background() {
    local pid
    for pid in ${background_pids[@]+"${background_pids[@]}"}; do kill -TERM "$pid" 2>/dev/null || true; done
    for pid in ${background_pids[@]+"${background_pids[@]}"}; do wait "$pid" 2>/dev/null || true; done
    background_pids=()
}

# stop_everything: the exit trap. Whatever the script was doing when it
# ended (its last line, an error under set -e, Ctrl-C, TERM), every process
# it started is stopped by pid and its files go.
stop_everything() {
    stop_client
    stop_supervisor
    stop_background
    if declare -F stop_script_processes >/dev/null; then stop_script_processes; fi
    [ -z "$tmp" ] || rm -rf "$tmp"
}
trap stop_everything EXIT
# INT and TERM end the script through exit, so that the EXIT trap runs, with
# the status a shell killed by the signal would have had.
trap 'exit 130' INT
trap 'exit 143' TERM

# start_sockhold LOG [OPTION...] -- COMMAND...: sockhold on 127.0.0.1:0
# (the kernel picks the port: no race with another run for a free one),
# stderr to LOG, in the background; sets sup_pid, and port once sockhold
# has logged it.
start_sockhold() {
    local log=$1
    shift
    "$sockhold" -l 127.0.0.1:0 "$@" 2>"$log" &
    sup_pid=$!
    wait_for_sockhold_port "$log"
}

# start_under_start_server LOG COMMAND...: start_server (Server::Starter)
# on a free port, its pid and status files in $tmp, output to LOG, in the
# background; sets sup_pid and port. It cannot report a port 0 it bound,
# hence free_port.
start_under_start_server() {
    local log=$1
    shift
    port=$(free_port)
    start_server --port="127.0.0.1:$port" --pid-file="$tmp/ss.pid" \
        --status-file="$tmp/ss.status" -- "$@" >"$log" 2>&1 &
    sup_pid=$!
}

# measure_reloads SCENARIO LABEL SUPERVISOR [SOCKHOLD_OPTION...] -- CHILD...:
# one row of reload.sh and readiness.sh. CHILD runs under SUPERVISOR
# (sockhold, with the options, or start_server); reload_client.py loads it
# with $workers threads and sends $reloads SIGHUPs at least $period s
# apart (plus the options in the array reload_client_options); the row's
# JSON is appended to results; the supervisor is stopped.
measure_reloads() {
    local scenario=$1 label=$2 supervisor=$3
    shift 3
    local options=()
    while [ "$1" != -- ]; do options+=("$1"); shift; done
    shift
    local key=${#results[@]}
    local log=$tmp/$key.log
    if [ "$supervisor" = sockhold ]; then
        start_sockhold "$log" ${options[@]+"${options[@]}"} -- "$@"
    else
        start_under_start_server "$log" "$@"
    fi
    # shellcheck disable=SC2154 # reloads, workers, period, reload_client_options: the script's
    run_client python3 "$root/benches/reload_client.py" run --supervisor-pid "$sup_pid" --port "$port" \
        --reloads "$reloads" --workers "$workers" --period "$period" \
        ${reload_client_options[@]+"${reload_client_options[@]}"} \
        --scenario "$scenario" --label "$label" --out "$tmp/$key.json" \
        || { echo "$bench: $scenario $label failed; its log:" >&2; cat "$log" >&2; exit 70; }
    results+=("$tmp/$key.json")
    stop_supervisor
}
