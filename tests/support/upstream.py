"""Real upstream HTTP servers on loopback for tests, each on its own thread and loop.

`Upstream` is an aiohttp app with behaviours chosen by path; `RawUpstream`
speaks bytes for the misbehaving cases (invalid HTTP, cut bodies, resets).
"""

from __future__ import annotations

import asyncio
import hashlib
import ssl
import threading
from collections import Counter
from collections.abc import Awaitable, Callable

from aiohttp import web

from tests.support.net import free_port


class _LoopThread:
    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    def run(self, coro: Awaitable[object], timeout: float = 10.0) -> object:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)  # type: ignore[arg-type]

    def stop(self) -> None:
        async def cancel_all() -> None:
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

        try:
            self.run(cancel_all())
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(5)


class Upstream:
    """An aiohttp server. Paths:

    /echo...            JSON of method, path, query, headers, body length and sha256
    /status/{code}      that status, small body
    /slow?delay=S       answers after S seconds
    /hang               never answers
    /bytes?size=N       N bytes with Content-Length
    /stream?size=N&chunk=C   N bytes, chunked, C at a time
    /sink               reads the body streaming; answers its length and sha256
    /headers?k=v        answers with response header k: v
    /nobody/{code}      that status (204/304) without a body
    anything else       like /echo
    """

    def __init__(self, ssl_context: ssl.SSLContext | None = None) -> None:
        self.port = free_port()
        self.ssl_context = ssl_context  # serves https:// with it when given
        self.url = f"{'https' if ssl_context else 'http'}://127.0.0.1:{self.port}"
        self.hits: Counter[str] = Counter()
        self.requests: list[dict[str, object]] = []
        self.connections = 0
        self.total = 0
        self.health_checks = 0
        self.health_status = 200
        self.fail_with: int | None = None  # answer every request (but /health) with this
        self._thread = _LoopThread()
        self._runner: web.AppRunner | None = None
        self._thread.run(self._start())

    async def _start(self) -> None:
        app = web.Application(client_max_size=1024**3)
        app.router.add_route("*", "/{tail:.*}", self._dispatch)
        self._runner = web.AppRunner(
            app, access_log=None, handle_signals=False, shutdown_timeout=0.2
        )
        await self._runner.setup()
        site = web.TCPSite(
            self._runner, "127.0.0.1", self.port, backlog=1024, ssl_context=self.ssl_context
        )
        await site.start()

    def stop(self) -> None:
        self.go_down()
        self._thread.stop()

    def go_down(self) -> None:
        """Stop listening and drop every connection (a crashed instance)."""
        if self._runner is not None:
            self._thread.run(self._runner.cleanup())
            self._runner = None

    def come_back(self) -> None:
        """Listen again on the same port."""
        if self._runner is None:
            self._thread.run(self._start())

    async def _dispatch(self, request: web.Request) -> web.StreamResponse:
        path = request.path
        first = path.strip("/").split("/")[0]
        self.hits[path] += 1
        self.total += 1
        if first == "health":
            self.health_checks += 1
            return web.Response(status=self.health_status, text="health")
        if self.fail_with is not None:
            return web.Response(status=self.fail_with, text=f"failing with {self.fail_with}")
        self.requests.append(
            {"method": request.method, "path": request.path_qs, "headers": dict(request.headers)}
        )
        handler = getattr(self, f"_h_{first}", None)
        if handler is None:
            return await self._h_echo(request)
        result: web.StreamResponse = await handler(request)
        return result

    async def _h_echo(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        return web.json_response(
            {
                "method": request.method,
                "path": request.path,
                "raw_path": request.raw_path,
                "query": request.query_string,
                "headers": [[k, v] for k, v in request.raw_headers_decoded()]
                if hasattr(request, "raw_headers_decoded")
                else [[k.decode(), v.decode()] for k, v in request.raw_headers],
                "length": len(body),
                "sha256": hashlib.sha256(body).hexdigest(),
                "version": f"{request.version.major}.{request.version.minor}",
            }
        )

    async def _h_status(self, request: web.Request) -> web.StreamResponse:
        code = int(request.path.split("/")[2])
        return web.Response(status=code, text=f"status {code}")

    async def _h_nobody(self, request: web.Request) -> web.StreamResponse:
        code = int(request.path.split("/")[2])
        return web.Response(status=code)

    async def _h_slow(self, request: web.Request) -> web.StreamResponse:
        await asyncio.sleep(float(request.query.get("delay", "1")))
        return web.json_response({"slow": True})

    async def _h_hang(self, request: web.Request) -> web.StreamResponse:
        await asyncio.sleep(3600)
        return web.Response()

    async def _h_bytes(self, request: web.Request) -> web.StreamResponse:
        size = int(request.query.get("size", "1024"))
        return web.Response(body=b"x" * size, content_type="application/octet-stream")

    async def _h_stream(self, request: web.Request) -> web.StreamResponse:
        size = int(request.query.get("size", "1048576"))
        chunk = int(request.query.get("chunk", "65536"))
        response = web.StreamResponse()
        response.enable_chunked_encoding()
        await response.prepare(request)
        block = b"y" * chunk
        sent = 0
        while sent < size:
            piece = block[: min(chunk, size - sent)]
            await response.write(piece)
            sent += len(piece)
        await response.write_eof()
        return response

    async def _h_sink(self, request: web.Request) -> web.StreamResponse:
        digest = hashlib.sha256()
        total = 0
        async for data in request.content.iter_any():
            digest.update(data)
            total += len(data)
        return web.json_response({"length": total, "sha256": digest.hexdigest()})

    async def _h_ws(self, request: web.Request) -> web.StreamResponse:
        ws = web.WebSocketResponse(max_msg_size=64 * 1024 * 1024)
        await ws.prepare(request)
        async for message in ws:
            if message.type == web.WSMsgType.TEXT:
                if message.data == "close-me":
                    await ws.close(code=4000, message=b"bye")
                    break
                await ws.send_str(message.data)
            elif message.type == web.WSMsgType.BINARY:
                await ws.send_bytes(message.data)
        return ws

    async def _h_headers(self, request: web.Request) -> web.StreamResponse:
        response = web.Response(text="headers")
        for key, value in request.query.items():
            response.headers.add(key, value)
        return response


RawHandler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


class RawUpstream:
    """A TCP server whose connections are handed to `handler(reader, writer)`."""

    def __init__(self, handler: RawHandler) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.received: list[bytes] = []
        self.connections = 0
        self._handler = handler
        self._thread = _LoopThread()
        self._server: asyncio.AbstractServer | None = None
        self._thread.run(self._start())

    async def _start(self) -> None:
        async def on_connect(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            self.connections += 1
            try:
                await self._handler(reader, writer)
            except (ConnectionError, asyncio.IncompleteReadError, asyncio.CancelledError):
                pass
            finally:
                writer.close()

        self._server = await asyncio.start_server(on_connect, "127.0.0.1", self.port)

    def stop(self) -> None:
        server = self._server
        if server is not None:
            # asyncio servers are not thread-safe: close it on its own loop's thread.
            async def close() -> None:
                server.close()

            self._thread.run(close())
        self._thread.stop()


async def read_request_head(reader: asyncio.StreamReader) -> bytes:
    return await reader.readuntil(b"\r\n\r\n")
