#!/usr/bin/env bash
# Maintenance answers: how soon a client gets FILE's bytes while sockhold
# is paused (--maintenance). 20 requests one after another (the first a POST
# with a 100 KB body, the others GETs that keep their side open), each
# checked to be exactly FILE; prints median and max time from connect to
# EOF. See benches/README.md.
# Usage: benches/maintenance.sh
set -euo pipefail
# shellcheck source=benches/lib.sh
. "$(dirname "$0")/lib.sh"
parse_options -- "$@"
build_release sockhold test_child
make_temp_dir maintenance
printf 'HTTP/1.1 503 Service Unavailable\r\nRetry-After: 30\r\nContent-Length: 12\r\nConnection: close\r\n\r\nmaintenance\n' > "$tmp/503.http"
start_sockhold "$tmp/log" --control "$tmp/ctl" --maintenance "$tmp/503.http" -- "$test_child" --graceful
wait_for_log "$tmp/log" "generation 1 ready"
"$sockhold" pause --control "$tmp/ctl" >/dev/null
wait_for_log "$tmp/log" "maintenance answering started"
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
