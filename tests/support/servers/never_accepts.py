"""Holds the socket at fd 3 open and never accepts on it (a server stuck in
its boot). For negative tests."""

import signal
import socket

listener = socket.socket(fileno=3)
while True:
    signal.pause()
