"""An asyncio server on the socket at fd 3 (systemd socket activation).

Waits in epoll_wait(2) (asyncio's selector). Boots for $SERVER_BOOT_SECONDS
(default 1.5) before it serves; appends "PID MONOTONIC" to $SERVER_SINCE_FILE
(if set) just before; answers each connection with "pid=PID"; on SIGTERM
stops accepting and finishes the connections it has.
"""

import asyncio
import os
import signal
import socket
import sys
import time


async def answer(reader, writer):
    writer.write(f"pid={os.getpid()}\n".encode())
    await writer.drain()
    writer.close()
    await writer.wait_closed()


async def main():
    if os.environ.get("LISTEN_PID") != str(os.getpid()) or int(os.environ.get("LISTEN_FDS", "0")) < 1:
        sys.exit("asyncio_server: no socket passed at fd 3 (LISTEN_PID, LISTEN_FDS)")
    time.sleep(float(os.environ.get("SERVER_BOOT_SECONDS", "1.5")))
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    if os.environ.get("SERVER_SINCE_FILE"):
        with open(os.environ["SERVER_SINCE_FILE"], "a") as since:
            since.write(f"{os.getpid()} {time.monotonic():.6f}\n")
    server = await asyncio.start_server(answer, sock=socket.socket(fileno=3))
    await stop.wait()
    # Stop accepting, finish the connections accepted so far (asyncio makes
    # a task for each accept), then close. Not server.close() first: in
    # Python 3.11 a connection accepted just before it is dropped without a
    # word (the task that makes its transport then fails Server._attach).
    asyncio.get_running_loop().remove_reader(3)
    while tasks := asyncio.all_tasks() - {asyncio.current_task()}:
        await asyncio.wait(tasks)
    server.close()


asyncio.run(main())
