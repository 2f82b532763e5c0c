"""Cluster-wide overrides: an operator's action taken on one instance, sent to every
other instance over the realtime event bus (Redis or NATS), where each worker applies
and keeps it (overrides.py) and says so.

On the reserved channel `_potok.admin.actions` (events.RESERVED_PREFIX): the public
events API and WebSocket publishers cannot use it, and the hub never delivers it to
clients; only the gateway publishes there, after the admin API authorized and audited
the call. Whoever can publish to the raw Redis or NATS can forge such a message, as
they can forge any event or cache purge: the bus is inside the gateway's trust boundary.

Every worker of every instance is subscribed to the bus: each applies an action itself
(the instance that took the call applied it already over its Unix sockets, and
recognises its own message by its instance id) and answers with an acknowledgement on
the same channel; the worker that took the call collects those for a short while.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

import structlog

from potok.admin.agent import ActionError
from potok.admin.overrides import Change
from potok.realtime.events import RESERVED_PREFIX, Event, make_event, new_event_id

if TYPE_CHECKING:
    from collections.abc import Coroutine

    from potok.admin.agent import WorkerAgent
    from potok.realtime.service import Realtime

log = structlog.get_logger("potok.admin.broadcast")

ACTIONS_CHANNEL = RESERVED_PREFIX + "admin.actions"
ACTION_TYPE = "admin.override"
ACK_TYPE = "admin.ack"
SOURCE = "admin"  # the metrics label of what the gateway publishes


class Unpublished(Exception):
    """The bus refused the action (down, or failing)."""


class ClusterBroadcast:
    """One worker's end of cluster-wide overrides."""

    def __init__(self, agent: WorkerAgent, realtime: Realtime) -> None:
        self.agent = agent
        self.realtime = realtime
        self._waiting: dict[str, list[dict[str, Any]]] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        realtime.listeners.append(self.on_event)

    @property
    def shared(self) -> bool:
        """A bus other instances can hear (the memory bus is this process's alone)."""
        return self.realtime.bus.name != "memory"

    # To the bus ------------------------------------------------------------------------

    async def publish(self, change: Change, wait: float) -> dict[str, Any]:
        """Send `change` to every other instance; what acknowledged it within `wait` s."""
        action = new_event_id()
        acks = self._waiting[action] = []
        data = {"action": action, "instance": self.agent.instance, "change": change.to_json()}
        try:
            try:
                await self.realtime.publish(make_event(ACTIONS_CHANNEL, ACTION_TYPE, data,
                                                       reserved=True), SOURCE)  # fmt: skip
            except Exception as exc:  # BusUnavailable, or a bus failing otherwise
                raise Unpublished(str(exc) or type(exc).__name__) from exc
            if wait > 0:
                await asyncio.sleep(wait)
        finally:
            del self._waiting[action]
        instances: dict[str, dict[str, Any]] = {}
        for ack in acks:
            instances.setdefault(ack["instance"], {})[ack["worker"]] = {
                key: ack[key] for key in ("ok", "status", "detail") if key in ack
            }
        return {"published": True, "action": action, "waited_s": wait, "instances": instances}

    # From the bus ----------------------------------------------------------------------

    def on_event(self, event: Event) -> bool:
        """Called for every bus event; True for this channel's (never for clients)."""
        if event.channel != ACTIONS_CHANNEL:
            return False
        data = event.data
        if not isinstance(data, dict):
            return True
        if event.type == ACTION_TYPE and data.get("instance") != self.agent.instance:
            self._spawn(self._apply(data))
        elif event.type == ACK_TYPE:
            waiting = self._waiting.get(str(data.get("action")))
            if waiting is not None and isinstance(data.get("instance"), str):
                waiting.append({**data, "worker": str(data.get("worker"))})
        return True

    async def _apply(self, data: dict[str, Any]) -> None:
        answer: dict[str, Any] = {"ok": True}
        try:
            change = Change.from_json(data.get("change"))
        except ValueError as exc:
            log.warning("cluster override ignored", error=str(exc))
            answer = {"ok": False, "status": 400, "detail": str(exc)}
        else:
            try:
                await self.agent.override(change)
            except ActionError as refusal:
                # This instance's config differs (no such service here): said, not fatal.
                log.warning("cluster override refused here", reason=refusal.detail)
                answer = {"ok": False, "status": refusal.status, "detail": refusal.detail}
        ack = {
            "action": data.get("action"),
            "instance": self.agent.instance,
            "worker": self.agent.worker_id,
            **answer,
        }
        await self.realtime.publish(make_event(ACTIONS_CHANNEL, ACK_TYPE, ack, reserved=True),
                                    SOURCE)  # fmt: skip

    def _spawn(self, work: Coroutine[Any, Any, None]) -> None:
        async def run() -> None:
            try:
                await work
            except Exception as exc:  # a bus that fails on the ack: logged, never fatal
                log.warning("cluster override failed", error=repr(exc))

        task = asyncio.get_running_loop().create_task(run())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
