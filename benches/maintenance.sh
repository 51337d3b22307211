#!/usr/bin/env bash
# Maintenance answers: how soon a client gets FILE's bytes while sockhold
# is paused (--maintenance). 20 requests one after another (the first a POST
# with a 100 KB body, the others GETs that keep their side open), each
# checked to be exactly FILE; prints median and max time from connect to
# EOF. See benches/README.md.
# Usage: benches/maintenance.sh
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
target=${CARGO_TARGET_DIR:-$root/target}
sockhold=$target/release/sockhold
child=$target/release/test_child
if command -v cargo >/dev/null; then
    (cd "$root" && cargo build --release --bins --features test-child --quiet)
fi
tmp=$(mktemp -d "${TMPDIR:-/tmp}/sockhold-maintenance.XXXXXX")
sup_pid=
cleanup() {
    if [ -n "$sup_pid" ]; then kill -TERM "$sup_pid" 2>/dev/null || true; wait "$sup_pid" 2>/dev/null || true; fi
    rm -rf "$tmp"
}
trap cleanup EXIT
printf 'HTTP/1.1 503 Service Unavailable\r\nRetry-After: 30\r\nContent-Length: 12\r\nConnection: close\r\n\r\nmaintenance\n' > "$tmp/503.http"
"$sockhold" -l 127.0.0.1:0 --control "$tmp/ctl" --maintenance "$tmp/503.http" -- "$child" --graceful 2>"$tmp/log" &
sup_pid=$!
port=
for _ in $(seq 200); do
    port=$(sed -n 's/^sockhold: listening on tcp 127\.0\.0\.1:\([0-9]*\) .*/\1/p' "$tmp/log")
    [ -n "$port" ] && grep -q "generation 1 ready" "$tmp/log" && break
    sleep 0.05
done
"$sockhold" pause --control "$tmp/ctl" >/dev/null
for _ in $(seq 200); do grep -q "maintenance answering started" "$tmp/log" && break; sleep 0.05; done
python3 - "$port" "$tmp/503.http" <<'PY'
import socket, sys, time
port, want = int(sys.argv[1]), open(sys.argv[2], "rb").read()
body = b"x" * 100_000
times = []
for i in range(20):
    started = time.monotonic()
    s = socket.create_connection(("127.0.0.1", port))
    if i == 0:
        s.sendall(b"POST / HTTP/1.1\r\nHost: bench\r\nContent-Length: %d\r\n\r\n" % len(body) + body)
    else:
        s.sendall(b"GET / HTTP/1.1\r\nHost: bench\r\n\r\n")
    data = b""
    while chunk := s.recv(65536):
        data += chunk
    times.append((time.monotonic() - started) * 1000)
    if data != want:
        sys.exit(f"maintenance.sh: answer {i} is not FILE: {data[:80]!r}")
times_sorted = sorted(times)
print(f"20 answers, each exactly FILE: median {times_sorted[10]:.1f} ms, max {max(times):.1f} ms, "
      f"POST of 100 KB {times[0]:.1f} ms")
PY
