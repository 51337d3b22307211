#!/usr/bin/env python3
"""A tiny HTTP-ish server that takes its listening sockets from sockhold.

It shows everything a program needs to do to run under sockhold (or systemd
socket activation), using only the Python standard library:

* take the listening sockets from fds 3, 4, ... (LISTEN_FDS of them), after
  checking that LISTEN_PID is our own pid;
* boot (simulated here by sleeping), then tell the supervisor it is ready by
  sending READY=1 to the datagram socket named by NOTIFY_SOCKET;
* on SIGTERM, finish the request in hand and exit 0.

Every request gets "HTTP/1.0 200 OK" and the body
"hello from pid <pid> (started <time>)", then the connection is closed.

Try it:

    sockhold -l 127.0.0.1:8080 -- python3 examples/server.py
    curl http://127.0.0.1:8080/
    kill -HUP <sockhold pid>     # start a new generation, then retire the old
    curl http://127.0.0.1:8080/  # a new pid, and no request was refused

Options: --boot SECONDS (default 0.5) is how long the simulated boot takes.
"""

import argparse
import os
import select
import selectors
import signal
import socket
import sys
import time

SD_LISTEN_FDS_START = 3


def log(msg):
    print(f"server.py[{os.getpid()}]: {msg}", file=sys.stderr, flush=True)


def listening_sockets():
    """The sockets passed by the supervisor, systemd-style."""
    listen_pid = os.environ.get("LISTEN_PID", "unset")
    if listen_pid != str(os.getpid()):
        # LISTEN_* were meant for another process (e.g. our parent): not ours.
        sys.exit(f"server.py: LISTEN_PID={listen_pid} is not my pid {os.getpid()}; "
                 "run me under sockhold")
    count = int(os.environ.get("LISTEN_FDS", "0"))
    if count < 1:
        sys.exit("server.py: LISTEN_FDS is not set; run me under sockhold")
    # fileno= makes Python ask the kernel for the family and type of each fd.
    socks = [socket.socket(fileno=fd)
             for fd in range(SD_LISTEN_FDS_START, SD_LISTEN_FDS_START + count)]
    for sock in socks:
        # Non-blocking accept: during a reload the old and the new generation
        # wait on the same sockets, and the one that loses the race for a
        # connection must not block in accept() (it could not see SIGTERM).
        sock.setblocking(False)
    return socks


def notify_ready():
    """Send READY=1 to NOTIFY_SOCKET (a path, or @name for an abstract socket)."""
    path = os.environ.get("NOTIFY_SOCKET")
    if not path:
        log("NOTIFY_SOCKET is not set; not sending READY=1")
        return
    if path.startswith("@"):
        path = "\0" + path[1:]
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
            s.sendto(b"READY=1", path)
    except OSError as e:  # the supervisor will notice we never got ready
        log(f"cannot send READY=1 to {os.environ['NOTIFY_SOCKET']}: {e}")


def drain(sock):
    """Empty the signal wakeup socket so select() does not keep firing."""
    try:
        while sock.recv(512):
            pass
    except BlockingIOError:
        pass


def handle(conn, body):
    """Read one request (headers only; we ignore them) and answer it."""
    conn.settimeout(5)  # a silent client must not stall the server forever
    try:
        request = b""
        while b"\r\n\r\n" not in request and b"\n\n" not in request:
            chunk = conn.recv(4096)
            if not chunk or len(request) > 65536:
                break
            request += chunk
        conn.sendall(b"HTTP/1.0 200 OK\r\n"
                     b"Content-Type: text/plain\r\n"
                     b"Content-Length: %d\r\n"
                     b"Connection: close\r\n"
                     b"\r\n" % len(body) + body)
        conn.shutdown(socket.SHUT_WR)
    except OSError as e:  # client went away or timed out: not our problem
        log(f"connection error: {e}")
    finally:
        conn.close()


def main():
    parser = argparse.ArgumentParser(description="Example server for sockhold.")
    parser.add_argument("--boot", type=float, default=0.5, metavar="SECONDS",
                        help="simulated start-up time before READY=1 (default 0.5)")
    args = parser.parse_args()

    started = time.strftime("%Y-%m-%d %H:%M:%S")
    body = f"hello from pid {os.getpid()} (started {started})\n".encode()
    socks = listening_sockets()

    # SIGTERM only sets a flag; the wakeup fd makes the select() below return
    # so the loop sees it (a request being handled is finished first).
    stopping = False

    def on_term(signum, frame):
        nonlocal stopping
        stopping = True

    wake_r, wake_w = socket.socketpair()
    wake_r.setblocking(False)
    wake_w.setblocking(False)
    signal.set_wakeup_fd(wake_w.fileno(), warn_on_full_buffer=False)
    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, on_term)

    # Pretend to load config, warm caches... Waiting on wake_r rather than
    # time.sleep() lets SIGTERM cut the boot short.
    deadline = time.monotonic() + args.boot
    while not stopping and (left := deadline - time.monotonic()) > 0:
        if select.select([wake_r], [], [], left)[0]:
            drain(wake_r)
    if stopping:
        return 0
    notify_ready()
    log("ready on " + ", ".join(str(s.getsockname()) for s in socks))

    sel = selectors.DefaultSelector()
    for sock in socks:
        sel.register(sock, selectors.EVENT_READ)
    sel.register(wake_r, selectors.EVENT_READ)
    while not stopping:
        for key, _ in sel.select():
            if key.fileobj is wake_r:
                drain(wake_r)  # the flag says what happened
                continue
            try:
                conn, _ = key.fileobj.accept()
            except (BlockingIOError, InterruptedError, ConnectionAbortedError):
                continue  # another process took it, or the client gave up
            handle(conn, body)
    log("SIGTERM: exiting")
    return 0


if __name__ == "__main__":
    sys.exit(main())
