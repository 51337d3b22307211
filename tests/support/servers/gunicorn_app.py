"""A WSGI app for gunicorn that takes $SERVER_BOOT_SECONDS (default 1.5) to
import, as a large application does.

Run as `gunicorn --chdir tests/support/servers gunicorn_app:app`: gunicorn
takes the socket at fd 3 by itself when LISTEN_PID is its pid (systemd
socket activation) and sends READY=1 from its arbiter as soon as that has
booted, before any worker has imported the app. Each worker imports it
(no --preload), appends "PID MONOTONIC" to $SERVER_SINCE_FILE (if set) once
imported, and answers with the body "pid=PID" (the worker's pid).
"""

import os
import time

time.sleep(float(os.environ.get("SERVER_BOOT_SECONDS", "1.5")))


def app(environ, start_response):
    body = f"pid={os.getpid()}\n".encode()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]


if os.environ.get("SERVER_SINCE_FILE"):
    with open(os.environ["SERVER_SINCE_FILE"], "a") as since:
        since.write(f"{os.getpid()} {time.monotonic():.6f}\n")
