"""A request body as it arrives: handed straight to a sink, or buffered (bounded) until one is.

`IncomingBody` is the server's `RequestBody` (potok/exchange.py), what handlers see."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from potok.exchange import BodySink, BodyTee


class _Reader(Protocol):
    """What a body steers on the connection it arrives on (the ClientConnection)."""

    def pause_reading(self) -> None: ...

    def resume_reading(self) -> None: ...

    def send_continue(self) -> None: ...


# Bytes buffered with nobody reading before the client socket is paused.
BUFFER_HIGH_WATER = 256 * 1024


class IncomingBody:
    """Streams body chunks from the parser to one consumer with back-pressure.

    Before a sink is attached, chunks wait here, and reading from the client
    pauses once `BUFFER_HIGH_WATER` bytes wait. The limit (`max_bytes`) is
    enforced as bytes arrive, so a body without Content-Length cannot grow past it.
    """

    __slots__ = (
        "_chunks",
        "_connection",
        "_holding",
        "_paused",
        "_sink",
        "_size",
        "_waiter",
        "complete",
        "continue_sent",
        "expect_continue",
        "max_bytes",
        "received",
        "tee",
    )

    def __init__(self, connection: _Reader, max_bytes: int, expect_continue: bool) -> None:
        self._connection = connection
        self._chunks: list[bytes] = []
        self._size = 0
        self._sink: BodySink | None = None
        self._waiter: asyncio.Future[None] | None = None
        self._paused = False
        self._holding = False  # buffering a whole body on purpose: do not pause
        self.complete = False
        self.received = 0
        self.max_bytes = max_bytes
        self.expect_continue = expect_continue
        self.continue_sent = False
        self.tee: BodyTee | None = None  # a copy of the bytes as they arrive (a mirror)

    # From the parser ---------------------------------------------------------

    def feed(self, data: bytes) -> bool:
        """Take a chunk; False if it pushes the body over `max_bytes`."""
        self.received += len(data)
        if self.received > self.max_bytes:
            return False
        if self.tee is not None:
            self.tee.take(data)
        if self._sink is not None:
            self._sink.write_body(data)
            return True
        self._chunks.append(data)
        self._size += len(data)
        if self._size > BUFFER_HIGH_WATER and not self._paused and not self._holding:
            self._paused = True
            self._connection.pause_reading()
        self._wake()
        return True

    def finish(self) -> None:
        self.complete = True
        if self.tee is not None:
            self.tee.done()
        if self._sink is not None:
            self._sink.end_body()
        else:
            self._wake()

    # For the consumer --------------------------------------------------------

    def attach(self, sink: BodySink) -> None:
        """Send everything buffered to `sink`, then stream the rest to it as it comes."""
        self._ask_for_body()
        for data in self._chunks:
            sink.write_body(data)
        self._chunks.clear()
        self._size = 0
        self._sink = sink
        if self.complete:
            sink.end_body()
        self._unpause()

    def detach(self) -> None:
        """Stop streaming (the consumer went away); later chunks are dropped."""
        self._sink = _DISCARD
        self._unpause()

    async def read(self) -> bytes:
        """The next chunk, or b'' at the end (for the ASGI bridge; not the proxy path)."""
        self._ask_for_body()
        while not self._chunks and not self.complete:
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        if not self._chunks:
            return b""
        data = b"".join(self._chunks)
        self._chunks.clear()
        self._size = 0
        self._unpause()
        return data

    async def read_all(self) -> bytes:
        parts = []
        while data := await self.read():
            parts.append(data)
        return b"".join(parts)

    async def peek_all(self) -> bytes:
        """Wait for the whole body and return it, leaving it in place for the upstream.

        For policies that must see the body before it is forwarded (validation). The
        body is bounded by `max_bytes`, so buffering it whole is bounded too.
        """
        self._ask_for_body()
        self._unpause()
        self._holding = True
        try:
            while not self.complete:
                self._waiter = asyncio.get_running_loop().create_future()
                try:
                    await self._waiter
                finally:
                    self._waiter = None
        finally:
            self._holding = False
        if len(self._chunks) > 1:
            self._chunks = [b"".join(self._chunks)]
        return self._chunks[0] if self._chunks else b""

    def buffered_bytes(self) -> bytes | None:
        """The whole body if it has fully arrived and nobody consumed it yet."""
        return b"".join(self._chunks) if self.complete and self._sink is None else None

    # -------------------------------------------------------------------------

    def _ask_for_body(self) -> None:
        if self.expect_continue and not self.continue_sent and not self.complete:
            self.continue_sent = True
            self._connection.send_continue()

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    def _unpause(self) -> None:
        if self._paused:
            self._paused = False
            self._connection.resume_reading()


class _Discard:
    def write_body(self, data: bytes) -> None:
        pass

    def end_body(self) -> None:
        pass


_DISCARD = _Discard()
