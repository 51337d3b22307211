"""A blocking accept(2) loop on the socket at fd 3 (systemd socket activation).

Boots for $SERVER_BOOT_SECONDS (default 1.5) before it serves; appends
"PID MONOTONIC" to $SERVER_SINCE_FILE (if set) just before; answers each
connection with "pid=PID". On SIGTERM it closes its fd 3 (the socket itself
stays open in the supervisor), so that the accept in progress fails, or the
connection it has just accepted is answered and the next accept fails.
"""

import os
import signal
import socket
import sys
import time

if os.environ.get("LISTEN_PID") != str(os.getpid()) or int(os.environ.get("LISTEN_FDS", "0")) < 1:
    sys.exit("blocking_server: no socket passed at fd 3 (LISTEN_PID, LISTEN_FDS)")
time.sleep(float(os.environ.get("SERVER_BOOT_SECONDS", "1.5")))
listener = socket.socket(fileno=3)
signal.signal(signal.SIGTERM, lambda *_: listener.close())
if os.environ.get("SERVER_SINCE_FILE"):
    with open(os.environ["SERVER_SINCE_FILE"], "a") as since:
        since.write(f"{os.getpid()} {time.monotonic():.6f}\n")
while True:
    try:
        connection, _ = listener.accept()
    except OSError:
        break  # closed by SIGTERM
    with connection:
        connection.sendall(f"pid={os.getpid()}\n".encode())
