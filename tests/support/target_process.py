"""An upstream target in a process of its own, so a test can kill -9 it or freeze it
(SIGSTOP: the kernel still accepts connections, nothing ever answers), as operators
see targets die. Small keep-alive HTTP/1.1 server on asyncio streams.

    python -m tests.support.target_process PORT [FAIL_EVERY]

answers 200 `ok`, or 503 to every FAIL_EVERY-th request when FAIL_EVERY > 0
(2: exactly every other request fails, so never several in a row).
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys

from tests.support.net import free_port, wait_for_port

OK = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 2\r\n\r\nok"
FAILING = b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 7\r\n\r\nfailing"


async def serve(port: int, fail_every: int) -> None:
    served = 0

    async def on_connect(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal served
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n"):
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":", 1)[1])
                if length:
                    await reader.readexactly(length)
                served += 1
                failing = fail_every > 0 and served % fail_every == 0
                writer.write(FAILING if failing and b" /health " not in head else OK)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.LimitOverrunError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(on_connect, "127.0.0.1", port, backlog=1024)
    async with server:
        await server.serve_forever()


class TargetProcess:
    """A target process on a free port; stop() cleans up whatever state it is in."""

    def __init__(self, fail_every: int = 0) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.name = f"127.0.0.1:{self.port}"
        self.process = subprocess.Popen(
            [sys.executable, "-m", "tests.support.target_process", str(self.port), str(fail_every)]
        )
        wait_for_port(self.port, timeout=15)

    def kill(self) -> None:
        """kill -9: the kernel resets its connections; new connects are refused."""
        self.process.kill()
        self.process.wait(5)

    def freeze(self) -> None:
        """SIGSTOP: connections are still accepted (backlog), nothing is ever answered."""
        os.kill(self.process.pid, signal.SIGSTOP)

    def stop(self) -> None:
        if self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGCONT)
            self.process.kill()
            self.process.wait(5)


if __name__ == "__main__":
    asyncio.run(serve(int(sys.argv[1]), int(sys.argv[2]) if len(sys.argv) > 2 else 0))
