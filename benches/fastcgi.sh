#!/usr/bin/env bash
# FastCGI benchmark: lighttpd in front of php-cgi on a Unix socket, under a
# stream of HTTP requests, while the backend is restarted N times; side by
# side in one run: sockhold --stdin-socket with reloads (SIGHUP), and
# spawn-fcgi with the restart it offers (kill php-cgi, spawn it again).
# Prints, per row: requests, failed requests (not a 200), max latency.
# See benches/README.md.
# Usage: benches/fastcgi.sh [--restarts N] [--workers N] [--period SECONDS]
set -euo pipefail
# shellcheck source=benches/lib.sh
. "$(dirname "$0")/lib.sh"

restarts=5
workers=4
period=1
parse_options restarts workers period -- "$@"

build_release sockhold
require_programs "lighttpd php-cgi spawn-fcgi python3" lighttpd php-cgi spawn-fcgi python3
make_temp_dir fastcgi
# spawn-fcgi's php-cgi is not our child: it is known by its pid file.
stop_script_processes() {
    if [ -f "$tmp/php.pid" ]; then kill -TERM "$(cat "$tmp/php.pid")" 2>/dev/null || true; fi
}

port=$(free_port)
write_lighttpd_conf "$port" 'server.modules = ("mod_fastcgi")' \
    "fastcgi.server = (\".php\" => ((\"socket\" => \"$tmp/php.sock\", \"check-local\" => \"disable\")))"
# shellcheck disable=SC2028 # the \n is PHP's
echo '<?php echo "pid=" . getmypid() . "\n";' > "$tmp/www/index.php"

# The load: $workers threads of new connections GET /index.php until told
# to stop (SIGTERM); prints requests, failed and max latency (ms).
cat > "$tmp/load.py" <<'PY'
import signal, socket, sys, threading, time
port, workers = int(sys.argv[1]), int(sys.argv[2])
stop = threading.Event()
signal.signal(signal.SIGTERM, lambda *_: stop.set())
lock = threading.Lock()
total = failed = 0
slowest = 0.0
def worker():
    global total, failed, slowest
    while not stop.is_set():
        started = time.monotonic()
        ok = False
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
                s.sendall(b"GET /index.php HTTP/1.0\r\nHost: bench\r\n\r\n")
                data = b""
                while chunk := s.recv(4096):
                    data += chunk
                ok = data.split(b" ", 2)[1:2] == [b"200"]
        except OSError:
            pass
        took = (time.monotonic() - started) * 1000
        with lock:
            total += 1
            failed += not ok
            slowest = max(slowest, took)
threads = [threading.Thread(target=worker) for _ in range(workers)]
for t in threads: t.start()
while not stop.is_set(): stop.wait(0.1)
for t in threads: t.join()
print(f"{total} {failed} {slowest:.1f}")
PY

# run_row LABEL: starts the backend its way, then lighttpd and the load,
# restarts the backend $restarts times, prints the row.
run_row() {
    local label=$1 backend_pid
    rm -f "$tmp/php.sock" "$tmp/php.pid"
    case "$label" in
        sockhold)
            PHP_FCGI_MAX_REQUESTS=0 "$sockhold" -q -l "$tmp/php.sock" --stdin-socket -- php-cgi &
            backend_pid=$!
            background_pids+=("$backend_pid")
            ;;
        spawn-fcgi)
            PHP_FCGI_MAX_REQUESTS=0 spawn-fcgi -s "$tmp/php.sock" -P "$tmp/php.pid" -- "$(command -v php-cgi)" >/dev/null
            ;;
    esac
    for _ in $(seq 100); do [ -S "$tmp/php.sock" ] && break; sleep 0.05; done
    lighttpd -D -f "$tmp/lighttpd.conf" &
    local lighttpd_pid=$!
    background_pids+=("$lighttpd_pid")
    wait_until_port_answers "$port"
    python3 "$tmp/load.py" "$port" "$workers" > "$tmp/$label.out" &
    client_pid=$!
    sleep "$period"
    for _ in $(seq "$restarts"); do
        case "$label" in
            sockhold) kill -HUP "$backend_pid" ;;
            spawn-fcgi)
                # spawn-fcgi's restart: stop php-cgi, start it again.
                local old
                old=$(cat "$tmp/php.pid")
                kill -TERM "$old"
                while kill -0 "$old" 2>/dev/null; do sleep 0.01; done
                PHP_FCGI_MAX_REQUESTS=0 spawn-fcgi -s "$tmp/php.sock" -P "$tmp/php.pid" -- "$(command -v php-cgi)" >/dev/null
                ;;
        esac
        sleep "$period"
    done
    kill -TERM "$client_pid"
    wait "$client_pid"
    client_pid=
    kill -TERM "$lighttpd_pid"; wait "$lighttpd_pid" 2>/dev/null || true
    case "$label" in
        sockhold) kill -TERM "$backend_pid"; wait "$backend_pid" 2>/dev/null || true ;;
        spawn-fcgi) kill -TERM "$(cat "$tmp/php.pid")" 2>/dev/null || true ;;
    esac
    read -r total failed slowest < "$tmp/$label.out"
    printf '| %-10s | %8s | %6s | %10s |\n' "$label" "$total" "$failed" "$slowest"
}

echo "fastcgi.sh: lighttpd -> php-cgi, $restarts backend restarts ${period}s apart, $workers client threads, $(nproc) CPUs"
echo
printf '| %-10s | %8s | %6s | %10s |\n' "backend" "requests" "failed" "max ms"
printf '|%s|%s|%s|%s|\n' "------------" "----------" "--------" "------------"
run_row sockhold
run_row spawn-fcgi
