"""A server that knows nothing of LISTEN_FDS: it binds its own address, as
most servers do (for sockhold --intercept-bind).

  binds_itself.py --port P [--host H] [--reuseaddr] [--nonblocking]
                  [--prefork N] [--also-any-port FILE] [--rebind-on-usr1]
  binds_itself.py --unix PATH [--prefork N]

Answers every connection with "pid=PID\n" and closes it. --reuseaddr sets
SO_REUSEADDR and --nonblocking O_NONBLOCK (as Go, Node and nginx do), both
before bind; TCP sockets get TCP_NODELAY before bind too. --unix removes
PATH before binding and again at exit, as many Unix socket servers do.
--prefork N binds in the parent and accepts in N forked children.
--also-any-port FILE also binds 127.0.0.1:0 (a port sockhold does not hold),
serves it too, and writes its port to FILE. --rebind-on-usr1: on SIGUSR1
a new socket binds the same address again (the old one is closed once the
new one listens), and "rebound pid=PID fd=FD" goes to stderr. On SIGTERM every process stops
accepting and exits once the connection it is answering is answered.
"""

import argparse
import os
import select
import signal
import socket
import sys

parser = argparse.ArgumentParser()
parser.add_argument("--port", type=int)
parser.add_argument("--host", default="127.0.0.1")
parser.add_argument("--unix")
parser.add_argument("--reuseaddr", action="store_true")
parser.add_argument("--nonblocking", action="store_true")
parser.add_argument("--prefork", type=int, default=0)
parser.add_argument("--also-any-port")
parser.add_argument("--rebind-on-usr1", action="store_true")
args = parser.parse_args()

stopping = False


def on_term(*_):
    global stopping
    stopping = True


def wake_on_signals():
    """A pipe of this process's own that turns readable on a signal, so
    that select returns (PEP 475 would retry it otherwise)."""
    r, w = os.pipe()
    os.set_blocking(w, False)
    signal.set_wakeup_fd(w)
    return r


rebind = False


def on_usr1(*_):
    global rebind
    rebind = True


signal.signal(signal.SIGTERM, on_term)
if args.rebind_on_usr1:
    signal.signal(signal.SIGUSR1, on_usr1)


def bound_server():
    if args.unix:
        try:
            os.unlink(args.unix)
        except FileNotFoundError:
            pass
        server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        if args.nonblocking:
            server.setblocking(False)
        server.bind(args.unix)
    else:
        family = socket.AF_INET6 if ":" in args.host else socket.AF_INET
        server = socket.socket(family, socket.SOCK_STREAM)
        if args.reuseaddr:
            server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        server.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if args.nonblocking:
            server.setblocking(False)
        server.bind((args.host, args.port))
    server.listen(5)
    return server


server = bound_server()
sockets = [server]
if args.also_any_port:
    extra = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    extra.bind(("127.0.0.1", 0))
    extra.listen(5)
    sockets.append(extra)
    with open(args.also_any_port + ".tmp", "w") as out:
        out.write(str(extra.getsockname()[1]))
    os.rename(args.also_any_port + ".tmp", args.also_any_port)
for s in sockets:
    # Another process may take a connection between select and accept.
    s.setblocking(False)


def serve():
    global rebind
    wake = wake_on_signals()
    while not stopping:
        readable = select.select(sockets + [wake], [], [])[0]
        if wake in readable:
            os.read(wake, 4096)
        if rebind:
            rebind = False
            again = bound_server()
            again.setblocking(False)
            sockets[0].close()
            sockets[0] = again
            print(f"rebound pid={os.getpid()} fd={again.fileno()}", file=sys.stderr, flush=True)
            continue
        for s in readable:
            if s is wake or stopping:
                continue
            try:
                connection, _ = s.accept()
            except BlockingIOError:
                continue
            connection.setblocking(True)
            connection.sendall(f"pid={os.getpid()}\n".encode())
            connection.close()


if args.prefork:
    children = []
    for _ in range(args.prefork):
        pid = os.fork()
        if pid == 0:
            serve()
            os._exit(0)
        children.append(pid)
    wake = wake_on_signals()
    while not stopping:
        select.select([wake], [], [])
    for pid in children:
        os.kill(pid, signal.SIGTERM)
    for pid in children:
        os.waitpid(pid, 0)
else:
    serve()
if args.unix:
    os.unlink(args.unix)
sys.exit(0)
