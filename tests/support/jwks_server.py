"""A local JWKS endpoint that counts how often it is fetched."""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web

from tests.support.net import free_port
from tests.support.upstream import _LoopThread


class JwksServer:
    def __init__(self, document: dict[str, Any]) -> None:
        self.document = document
        self.fetches = 0
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/.well-known/jwks.json"
        self._thread = _LoopThread()
        self._runner: web.AppRunner | None = None
        self._thread.run(self._start())

    async def _start(self) -> None:
        app = web.Application()
        app.router.add_get("/.well-known/jwks.json", self._jwks)
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()

    async def _jwks(self, request: web.Request) -> web.Response:
        self.fetches += 1
        return web.Response(text=json.dumps(self.document), content_type="application/json")

    def stop(self) -> None:
        if self._runner is not None:
            self._thread.run(self._runner.cleanup())
        self._thread.stop()
