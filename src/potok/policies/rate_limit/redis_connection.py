"""Just enough of a Redis client to run one Lua script: one connection, RESP via hiredis.

The rate-limit store sends one `EVALSHA` per event-loop tick and nothing else, so a
general client's work per call — a connection pool, a lock, command packing in
Python, a retry wrapper, stream reader/writer objects — is all overhead. Here a
command is packed by `hiredis.pack_command` and written to the transport at once;
replies are parsed by `hiredis.Reader` in `data_received` and handed, in order, to
the callbacks waiting for them (Redis answers in order, so several calls may be in
flight on the one connection). A callback, not a future and a task: the reply is
acted on in the same loop iteration that reads it (`ScriptClient.send`), which
saves the store a task, a coroutine and two loop iterations per call.

Where and how it connects (address, database, credentials, TLS, connect timeout) is
a `RedisEndpoint` made from the `redis:` section by `potok.redis_clients`, like every
other Redis connection of the gateway. A lost connection fails every waiting call with
`ConnectionError`; the next call connects again. Timeouts are the caller's: after
one, `reset()` drops the connection, since a reply still owed on it would answer the
wrong call's question only if kept.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, cast

import hiredis

if TYPE_CHECKING:
    from potok.redis_clients import RedisEndpoint

OnReply = Callable[[Any], None]
"""Receives a command's reply: the value, or an exception instance (`RedisReplyError`
when Redis answered with an error, `ConnectionError` when the connection was lost
first). Called exactly once, from the event loop; it must not raise."""


def pack(*args: str | int | float | bytes) -> bytes:
    """One command in RESP, packed in C."""
    packed: bytes = hiredis.pack_command(args)  # type: ignore[arg-type]  # stub: a 1-tuple
    return packed


class RedisReplyError(Exception):
    """Redis answered a command with an error (e.g. NOSCRIPT, OOM, BUSY)."""


class RedisConnection(asyncio.Protocol):
    """One open connection: write packed commands, get their replies in callbacks."""

    def __init__(self) -> None:
        self._loop = asyncio.get_running_loop()
        # Error replies come out of the reader as RedisReplyError itself: no conversion.
        self._reader = hiredis.Reader(replyError=RedisReplyError)
        self._waiting: deque[OnReply] = deque()
        self._transport: asyncio.Transport | None = None
        self.closed = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass

    @property
    def open(self) -> bool:
        return not self.closed and self._transport is not None

    def send(self, command: bytes, on_reply: OnReply) -> None:
        """Send one command (packed by `hiredis.pack_command`); `on_reply` gets its reply
        (see `OnReply`), never inside this call."""
        if not self.open:
            self._loop.call_soon(on_reply, ConnectionError("redis connection closed"))
            return
        self._transport.write(command)  # type: ignore[union-attr]  # open: not None
        self._waiting.append(on_reply)

    def call(self, command: bytes) -> asyncio.Future[Any]:
        """`send` for a coroutine: the reply in a future, errors raised from it."""
        future: asyncio.Future[Any] = self._loop.create_future()

        def deliver(reply: Any) -> None:
            if future.done():  # its caller gave up (timeout); the reply is dropped
                return
            if isinstance(reply, Exception):
                future.set_exception(reply)
            else:
                future.set_result(reply)

        self.send(command, deliver)
        return future

    def data_received(self, data: bytes) -> None:
        reader = self._reader
        reader.feed(data)
        try:
            while (reply := reader.gets()) is not False:
                self._deliver(self._waiting.popleft(), reply)
        except (hiredis.ProtocolError, IndexError) as exc:  # garbage, or a reply nobody asked for
            self.close(ConnectionError(f"redis protocol error: {exc}"))

    def connection_lost(self, exc: Exception | None) -> None:
        self._fail(ConnectionError(f"redis connection lost: {exc}" if exc else "redis closed"))

    def close(self, error: Exception | None = None) -> None:
        """Drop the connection at once; waiting calls fail with `error`."""
        if self._transport is not None:
            self._transport.abort()
        self._fail(error or ConnectionError("redis connection closed"))

    def _fail(self, error: Exception) -> None:
        self.closed = True
        while self._waiting:
            self._deliver(self._waiting.popleft(), error)

    def _deliver(self, on_reply: OnReply, reply: Any) -> None:
        try:
            on_reply(reply)
        except Exception as exc:  # a bug in a callback: report it, keep the connection
            self._loop.call_exception_handler(
                {"message": "redis reply callback failed", "exception": exc}
            )


class ScriptClient:
    """Runs one Lua script on one Redis server over one connection of its own.

    The connection is opened by the first call and again after it is lost or reset;
    the script is loaded once (`SCRIPT LOAD`) and again if Redis forgot it (NOSCRIPT
    after a restart or `SCRIPT FLUSH`).
    """

    def __init__(self, endpoint: RedisEndpoint, script: str) -> None:
        self._endpoint = endpoint
        self._script = script
        self._sha: str | None = None
        self._connection: RedisConnection | None = None
        self._tasks: set[asyncio.Task[None]] = set()  # the loop keeps only weak references

    def send(self, keys: list[str], args: list[Any], on_reply: OnReply) -> None:
        """EVALSHA the script with `keys` and `args`; `on_reply` gets the reply or the
        exception (see `OnReply`), never inside this call.

        With the connection open and the script loaded — always, but for the first
        call and after a failure — the command is written at once and the reply handled
        in the loop iteration that reads it. Otherwise a task connects, loads the
        script and sends (the slow path); a NOSCRIPT reply takes that path too."""
        connection = self._connection
        sha = self._sha
        if sha is None or connection is None or not connection.open:
            self._in_task(keys, args, on_reply)
            return

        def replied(reply: Any) -> None:
            if isinstance(reply, RedisReplyError) and str(reply).startswith("NOSCRIPT"):
                self._sha = None
                self._in_task(keys, args, on_reply)
            else:
                on_reply(reply)

        connection.send(pack("EVALSHA", sha, len(keys), *keys, *args), replied)

    def _in_task(self, keys: list[str], args: list[Any], on_reply: OnReply) -> None:
        async def evaluate() -> None:
            try:
                reply = await self.evaluate(keys, args)
            except (RedisReplyError, OSError) as exc:  # ConnectionError and TimeoutError too
                on_reply(exc)
            else:
                on_reply(reply)

        task = asyncio.get_running_loop().create_task(evaluate())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def evaluate(self, keys: list[str], args: list[Any]) -> Any:
        """EVALSHA the script with `keys` and `args`; its reply."""
        connection = self._connection
        if connection is None or connection.closed:
            connection = await self._connect()
        if self._sha is not None:
            try:
                return await connection.call(pack("EVALSHA", self._sha, len(keys), *keys, *args))
            except RedisReplyError as exc:
                if not str(exc).startswith("NOSCRIPT"):
                    raise
        self._sha = await self._load(connection)
        return await connection.call(pack("EVALSHA", self._sha, len(keys), *keys, *args))

    async def _load(self, connection: RedisConnection) -> str:
        sha = await connection.call(pack("SCRIPT", "LOAD", self._script))
        return sha.decode() if isinstance(sha, bytes) else str(sha)

    def reset(self) -> None:
        """Drop the connection (after a timeout: its state is unknown); the next call
        connects again."""
        if self._connection is not None:
            self._connection.close()
            self._connection = None

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        self.reset()

    async def _connect(self) -> RedisConnection:
        opened = await self._open()
        current = self._connection
        if current is not None and not current.closed:  # a concurrent call was first
            opened.close()
            return current
        self._connection = opened
        return opened

    async def _open(self) -> RedisConnection:
        target = self._endpoint
        loop = asyncio.get_running_loop()
        async with asyncio.timeout(target.connect_timeout):
            if target.path is not None:
                _, connection = await loop.create_unix_connection(RedisConnection, target.path)
            else:
                _, connection = await loop.create_connection(
                    RedisConnection, target.host, target.port, ssl=target.tls
                )
            try:
                if target.password is not None:
                    user = (target.username,) if target.username else ()
                    await connection.call(pack("AUTH", *user, target.password))
                if target.db:
                    await connection.call(pack("SELECT", target.db))
            except BaseException:
                connection.close()
                raise
        return connection
