"""A blocking accept(2) server (as blocking_server.py) that first makes
itself non-dumpable, prctl(PR_SET_DUMPABLE, 0), as setuid programs and
some hardened servers do: another process of the same user, not root, can
then no longer read its /proc/PID/fd, /proc/PID/syscall, ...

Boots for $SERVER_BOOT_SECONDS (default 1.5); appends "PID MONOTONIC" to
$SERVER_SINCE_FILE (if set) just before it serves; if $SERVER_SEND_READY is
set, then sends READY=1 to $NOTIFY_SOCKET (sd_notify(3)); answers each
connection with "pid=PID".
"""

import ctypes
import os
import signal
import socket
import sys
import time

PR_SET_DUMPABLE = 4
if ctypes.CDLL(None, use_errno=True).prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) != 0:
    sys.exit(f"undumpable_server: prctl: {os.strerror(ctypes.get_errno())}")
if os.environ.get("LISTEN_PID") != str(os.getpid()) or int(os.environ.get("LISTEN_FDS", "0")) < 1:
    sys.exit("undumpable_server: no socket passed at fd 3 (LISTEN_PID, LISTEN_FDS)")
time.sleep(float(os.environ.get("SERVER_BOOT_SECONDS", "1.5")))
listener = socket.socket(fileno=3)
signal.signal(signal.SIGTERM, lambda *_: listener.close())
if os.environ.get("SERVER_SINCE_FILE"):
    with open(os.environ["SERVER_SINCE_FILE"], "a") as since:
        since.write(f"{os.getpid()} {time.monotonic():.6f}\n")
if os.environ.get("SERVER_SEND_READY") and os.environ.get("NOTIFY_SOCKET"):
    address = os.environ["NOTIFY_SOCKET"]
    if address.startswith("@"):
        address = "\0" + address[1:]
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as notify:
        notify.sendto(b"READY=1", address)
while True:
    try:
        connection, _ = listener.accept()
    except OSError:
        break  # closed by SIGTERM
    with connection:
        connection.sendall(f"pid={os.getpid()}\n".encode())
