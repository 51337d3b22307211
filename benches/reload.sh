#!/usr/bin/env bash
# Zero-downtime reload benchmark: sockhold side by side with start_server
# (Server::Starter, Debian's libserver-starter-perl) on the same test server.
# See benches/README.md.
# Usage: benches/reload.sh [--reloads N] [--workers N] [--period SECONDS] [--only TEXT]
#   --reloads 20, --workers 4 (client threads), --period 2 (seconds between SIGHUPs, at
#   least); --only runs just the rows whose "scenario supervisor" contains TEXT.
set -euo pipefail
# shellcheck source=benches/lib.sh
. "$(dirname "$0")/lib.sh"

reloads=20
workers=4
period=2
only=
parse_options reloads workers period only -- "$@"

# test_child is built only with its feature (Cargo.toml).
build_release sockhold test_child
require_programs "libserver-starter-perl python3" start_server python3
make_temp_dir bench
reload_client_options=()

# run_one SCENARIO LABEL READY_AFTER_MS SUPERVISOR [SOCKHOLD_OPTION...]
run_one() {
    local scenario=$1 label=$2 ready_after=$3 supervisor=$4
    shift 4
    case "$scenario $label" in *"$only"*) ;; *) return 0 ;; esac
    measure_reloads "$scenario" "$label" "$supervisor" "$@" \
        -- "$test_child" --graceful --ready-after "$ready_after"
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
python3 "$root/benches/reload_client.py" table --slowest "${results[@]}"
