"""http.server (socketserver) on the socket at fd 3 (systemd socket activation).

socketserver's serve_forever waits in poll(2) (selectors.PollSelector; select(2)
where poll is missing). Boots for $SERVER_BOOT_SECONDS (default 1.5) before it
serves; appends "PID MONOTONIC" to $SERVER_SINCE_FILE (if set) just before;
answers GET with the body "pid=PID"; on SIGTERM stops serving and finishes the
requests it has.
"""

import http.server
import os
import signal
import socket
import sys
import threading
import time


class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = f"pid={os.getpid()}\n".encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format, *args):
        pass


if os.environ.get("LISTEN_PID") != str(os.getpid()) or int(os.environ.get("LISTEN_FDS", "0")) < 1:
    sys.exit("http_server: no socket passed at fd 3 (LISTEN_PID, LISTEN_FDS)")
time.sleep(float(os.environ.get("SERVER_BOOT_SECONDS", "1.5")))
server = http.server.ThreadingHTTPServer(("", 0), Handler, bind_and_activate=False)
# ThreadingHTTPServer's request threads are daemons, which server_close
# does not wait for: the answer in progress would be cut off at exit.
server.daemon_threads = False
server.socket.close()
server.socket = socket.socket(fileno=3)


def stop_on_sigterm():
    signal.sigwait({signal.SIGTERM})
    server.shutdown()  # waits for serve_forever, which runs in the main thread


# SIGTERM is taken by sigwait in a thread of its own, never by a handler. A
# Python handler runs in the main thread between any two bytecodes, and one
# that starts a thread deadlocks when it lands while the main thread holds
# threading's _shutdown_locks_lock, as it does on every connection
# (ThreadingMixIn.process_request -> _Threads.reap -> Thread.is_alive ->
# _stop): the new thread needs that lock before it counts as started, and
# the handler waits for it to start. The connection just accepted was then
# never answered, and was reset when the supervisor's stop timeout killed
# the process. Blocked here, before any other thread exists, SIGTERM stays
# blocked in every thread (they inherit the mask), so only sigwait takes it.
signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})
threading.Thread(target=stop_on_sigterm, daemon=True).start()
if os.environ.get("SERVER_SINCE_FILE"):
    with open(os.environ["SERVER_SINCE_FILE"], "a") as since:
        since.write(f"{os.getpid()} {time.monotonic():.6f}\n")
server.serve_forever()
server.server_close()  # joins the request threads
