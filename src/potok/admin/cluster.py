"""Reads and actions across `--workers N`: each worker serves its agent on a Unix socket,
and the worker that took an admin call asks every worker, itself included, in parallel.

Why peer sockets and not the supervisor: the supervisor is a synchronous loop that
must stay simple (it restarts workers); a worker's event loop already answers I/O.
The sockets live in the supervisor's private run directory (mode 0700, made with
mkdtemp, the one the metrics snapshots use): only the gateway's own user can connect.
A worker that is down (being restarted) answers nothing: the call reports it as
unreachable instead of failing. One request per connection, one JSON line each way.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from pathlib import Path
from typing import Any

import orjson
import structlog

from potok.admin.agent import ActionError, WorkerAgent

log = structlog.get_logger("potok.admin.cluster")

PREFIX = "admin-"
SUFFIX = ".sock"
LINE_LIMIT = 64 * 1024 * 1024
TIMEOUT = 5.0

Reply = dict[str, Any]  # {"ok": True, "result": ...} or {"ok": False, "status", "detail"}


class Cluster:
    def __init__(self, agent: WorkerAgent, directory: Path | None, timeout: float = TIMEOUT):
        self.agent = agent
        self.directory = directory
        self.timeout = timeout
        self._server: asyncio.AbstractServer | None = None

    @property
    def path(self) -> Path | None:
        if self.directory is None:
            return None
        return self.directory / f"{PREFIX}{self.agent.worker_id}{SUFFIX}"

    async def start(self) -> None:
        """Serve this worker's agent to its siblings (nothing to do without a run dir)."""
        path = self.path
        if path is None:
            return
        with contextlib.suppress(FileNotFoundError):
            path.unlink()  # left by this worker's previous life
        self._server = await asyncio.start_unix_server(self._serve, path, limit=LINE_LIMIT)
        os.chmod(path, 0o600)

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None
            with contextlib.suppress(OSError):
                self.path.unlink()  # type: ignore[union-attr]

    async def ask(self, op: str, args: dict[str, Any] | None = None) -> dict[str, Reply]:
        """{worker id: reply} from every worker, this one first."""
        args = args or {}
        peers = self._peers()
        replies = await asyncio.gather(
            self._local(op, args), *(self._remote(path, op, args) for path in peers.values())
        )
        return dict(zip([self.agent.worker_id, *peers], replies, strict=True))

    def _peers(self) -> dict[str, Path]:
        if self.directory is None:
            return {}
        found = {}
        for path in sorted(self.directory.glob(f"{PREFIX}*{SUFFIX}")):
            worker = path.name[len(PREFIX) : -len(SUFFIX)]
            if worker != self.agent.worker_id:
                found[worker] = path
        return found

    async def _local(self, op: str, args: dict[str, Any]) -> Reply:
        try:
            return {"ok": True, "result": await self.agent.handle(op, args)}
        except ActionError as exc:
            return {"ok": False, "status": exc.status, "detail": exc.detail}
        except KeyError as exc:
            return {"ok": False, "status": 400, "detail": f"unknown operation or argument {exc}"}

    async def _remote(self, path: Path, op: str, args: dict[str, Any]) -> Reply:
        try:
            return await asyncio.wait_for(self._exchange(path, op, args), self.timeout)
        except (OSError, TimeoutError, ValueError) as exc:
            return {"ok": False, "status": 503, "detail": f"worker unreachable: {exc!r}"}

    async def _exchange(self, path: Path, op: str, args: dict[str, Any]) -> Reply:
        reader, writer = await asyncio.open_unix_connection(path, limit=LINE_LIMIT)
        try:
            writer.write(orjson.dumps({"op": op, "args": args}) + b"\n")
            await writer.drain()
            line = await reader.readline()
            if not line:
                raise ValueError("closed without an answer")
            reply: Reply = orjson.loads(line)
            return reply
        finally:
            writer.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            line = await reader.readline()
            request = orjson.loads(line)
            reply = await self._local(str(request["op"]), dict(request.get("args") or {}))
            writer.write(orjson.dumps(reply, default=str) + b"\n")
            await writer.drain()
        except Exception as exc:  # a sibling's malformed call must not hurt this worker
            log.warning("admin cluster call failed", error=repr(exc))
        finally:
            writer.close()
