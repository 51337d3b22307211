"""A blocking accept(2) loop on the socket at fd 3 whose graceful stop calls
shutdown(2) on it (a common pattern, and a mistake on a shared socket):
on SIGTERM it shuts the listening socket down for reading and writing and
exits 0. Answers each connection with "pid=PID"; an accept that fails (as
it does once another process shut the socket down) ends it with status 1.
"""

import os
import signal
import socket
import sys

if os.environ.get("LISTEN_PID") != str(os.getpid()) or int(os.environ.get("LISTEN_FDS", "0")) < 1:
    sys.exit("shuts_down_socket: no socket passed at fd 3 (LISTEN_PID, LISTEN_FDS)")
listener = socket.socket(fileno=3)


def stop(*_):
    listener.shutdown(socket.SHUT_RDWR)
    print(f"shuts_down_socket[{os.getpid()}]: SIGTERM: shut the listener down", flush=True)
    os._exit(0)


signal.signal(signal.SIGTERM, stop)
while True:
    try:
        connection, _ = listener.accept()
    except OSError as error:
        sys.exit(f"shuts_down_socket[{os.getpid()}]: accept: {error}")
    with connection:
        connection.sendall(f"pid={os.getpid()}\n".encode())
