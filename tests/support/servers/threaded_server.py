"""A server whose blocking accept(2) loop runs in a thread other than the
main one, on the socket at fd 3 (systemd socket activation).

Boots for $SERVER_BOOT_SECONDS (default 1.5) before it serves; appends
"PID MONOTONIC" to $SERVER_SINCE_FILE (if set) just before; answers each
connection with "pid=PID". The main thread waits for the accept thread. On
SIGTERM it closes its fd 3 (the socket itself stays open in the supervisor)
and interrupts the accept thread with SIGUSR1: the accept in progress fails,
or the connection just accepted is answered and the next accept fails.
"""

import os
import signal
import socket
import sys
import threading
import time


def serve(listener):
    while True:
        try:
            connection, _ = listener.accept()
        except OSError:
            return  # closed on SIGTERM
        with connection:
            connection.sendall(f"pid={os.getpid()}\n".encode())


def stop(*_):
    listener.close()
    signal.pthread_kill(accepter.ident, signal.SIGUSR1)


if os.environ.get("LISTEN_PID") != str(os.getpid()) or int(os.environ.get("LISTEN_FDS", "0")) < 1:
    sys.exit("threaded_server: no socket passed at fd 3 (LISTEN_PID, LISTEN_FDS)")
time.sleep(float(os.environ.get("SERVER_BOOT_SECONDS", "1.5")))
listener = socket.socket(fileno=3)
accepter = threading.Thread(target=serve, args=(listener,))
# A handler (run in the main thread) so that SIGUSR1 only interrupts the
# accept thread's accept(2) with EINTR; Python then retries it on the closed
# socket, which fails.
signal.signal(signal.SIGUSR1, lambda *_: None)
signal.signal(signal.SIGTERM, stop)
if os.environ.get("SERVER_SINCE_FILE"):
    with open(os.environ["SERVER_SINCE_FILE"], "a") as since:
        since.write(f"{os.getpid()} {time.monotonic():.6f}\n")
accepter.start()
accepter.join()
