"""Closes the socket at fd 3, binds nothing, and runs on (a server that
lost its socket). For negative tests."""

import os
import signal

os.close(3)
while True:
    signal.pause()
