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
# shellcheck source=benches/lib.sh
. "$(dirname "$0")/lib.sh"

reloads=10
workers=4
boot=3000
period=4
steady=3
only=
parse_options reloads workers boot period steady only -- "$@"

build_release sockhold test_child
require_programs "libserver-starter-perl python3" start_server python3
make_temp_dir bench
reload_client_options=(--steady "$steady")

# run_one LABEL SUPERVISOR [SOCKHOLD_OPTION...]
run_one() {
    local label=$1 supervisor=$2
    shift 2
    case "$label" in *"$only"*) ;; *) return 0 ;; esac
    # Boots, then serves; never sends READY=1.
    measure_reloads "boots-${boot}ms" "$label" "$supervisor" "$@" \
        -- "$test_child" --graceful --boot "$boot"
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
python3 "$root/benches/reload_client.py" table --readiness --slowest "${results[@]}"
