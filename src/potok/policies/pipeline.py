"""A route's pipeline: its policies in stage order, then the terminal stage.

Built once per route at config load. A route without coroutine policies runs its
hooks inline in the parser's callback chain. A hook that must wait either returns
`SUSPENDED` and later calls `resume` itself (the batched rate-limit store: the
request goes on in the very callback that reads the batch's reply), or returns a
future and the pipeline goes on from the next hook in that future's done-callback.
Either way no task is created: only a route with an `on_request_async` policy runs
its request hooks in a task.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from functools import partial
from typing import TYPE_CHECKING

from potok.errors import GatewayError
from potok.exchange import ResponseHook
from potok.policies.answer import EdgeAnswer
from potok.policies.base import SUSPENDED, Policy, RequestOutcome, Waiting
from potok.policies.response import ResponseFilterFactory, ResponseSink, open_chain

if TYPE_CHECKING:
    from potok.exchange import Exchange

Terminal = Callable[["Exchange"], None]
RequestHook = Callable[["Exchange"], RequestOutcome]


class Pipeline:
    __slots__ = (
        "_async_steps",
        "_request_hooks",
        "has_response_filters",
        "names",
        "response_filters",
        "response_hooks",
        "terminal",
    )

    def __init__(self, policies: list[Policy], terminal: Terminal) -> None:
        ordered = sorted(policies, key=lambda p: p.stage)
        self.names = tuple(p.name for p in ordered)
        self._request_hooks: tuple[RequestHook, ...] = tuple(
            p.on_request for p in ordered if p.on_request is not None
        )
        self.response_hooks: tuple[ResponseHook, ...] = tuple(
            p.on_response for p in ordered if p.on_response is not None
        )
        # Opened per proxied request, first nearest the client (policies/response.py).
        self.response_filters: tuple[ResponseFilterFactory, ...] = tuple(
            p.response_filter for p in ordered if p.response_filter is not None
        )
        self.has_response_filters = bool(self.response_filters)
        # With any async policy, every request hook runs in the task, in stage order.
        self._async_steps = (
            tuple(p for p in ordered if p.on_request or p.on_request_async)
            if any(p.on_request_async for p in ordered)
            else ()
        )
        self.terminal = terminal

    def open_response(self, exchange: Exchange) -> ResponseSink | None:
        """The response filters opened for one proxied request (the sink the upstream
        stage writes to), or None if one of them answered the request itself. The
        route's response hooks run at the client's end of it."""
        return open_chain(self.response_filters, exchange, self.response_hooks)

    def run(self, exchange: Exchange) -> None:
        if self._async_steps:
            asyncio.get_running_loop().create_task(self._run_async(exchange))
            return
        self._proceed(exchange, 0)

    def _proceed(self, exchange: Exchange, start: int) -> None:
        """Run the request hooks from `start`, then the terminal; at a hook that must
        wait, stop: its policy calls `resume`, or its future's done-callback goes on."""
        # Iterating the tuple itself (sliced only when resuming) costs half of what
        # range() and indexing do; this runs for every request of a route with policies.
        index = start
        try:
            for hook in self._request_hooks[start:] if start else self._request_hooks:
                index += 1
                waiting = hook(exchange)
                if waiting is not None:
                    if waiting is SUSPENDED:
                        exchange.suspended_in = self
                        exchange.resume_at = index
                    else:
                        waiting.add_done_callback(partial(self._waited, exchange, index))  # type: ignore[union-attr]
                    return
        except GatewayError as error:
            refuse(exchange, error)
            return
        self.terminal(exchange)

    def resume(self, exchange: Exchange, refusal: GatewayError | None = None) -> None:
        """Go on with a request a hook SUSPENDED: with the next hook, or refuse it.
        (Policies call `exchange.resume`, which finds this pipeline.)"""
        waiter = exchange.resume_waiter
        if waiter is not None:  # the route's hooks run in a task, which awaits this
            exchange.resume_waiter = None
            if not waiter.done():
                if refusal is None:
                    waiter.set_result(None)
                else:
                    waiter.set_exception(refusal)
            return
        if not exchange.is_current():
            return  # the client left (or the deadline answered) while the request waited
        if refusal is not None:
            refuse(exchange, refusal)
            return
        try:
            self._proceed(exchange, exchange.resume_at)
        except Exception as exc:  # a bug: answered as the connection does, the caller goes on
            exchange.handler_failed(exc)

    def _waited(self, exchange: Exchange, start: int, waiting: Waiting) -> None:
        error = waiting.exception()
        if error is not None:
            if isinstance(error, GatewayError):
                refuse(exchange, error)
                return
            raise error  # a bug: reported by the loop's exception handler, as from a task
        if not exchange.is_current():
            return  # the client left while the request waited
        self._proceed(exchange, start)

    async def _run_async(self, exchange: Exchange) -> None:
        try:
            for policy in self._async_steps:
                if policy.on_request_async is not None:
                    await policy.on_request_async(exchange)
                elif policy.on_request is not None:
                    waiting = policy.on_request(exchange)
                    if waiting is SUSPENDED:  # resume() settles this future
                        exchange.suspended_in = self
                        waiting = asyncio.get_running_loop().create_future()
                        exchange.resume_waiter = waiting
                    if waiting is not None:
                        await waiting  # type: ignore[misc]
        except GatewayError as error:
            refuse(exchange, error)
            return
        if exchange.is_current():
            self.terminal(exchange)


def refuse(exchange: Exchange, error: GatewayError) -> None:
    """Answer for a policy that stopped the request. `Exchange.respond` runs the route's
    response hooks on it, so a 429 or 403 carries CORS and security headers like any
    other answer; an `EdgeAnswer` (a preflight) is sent as its policy built it."""
    exchange.body.detach()
    if isinstance(error, EdgeAnswer):
        exchange.send_head(error.status, list(error.headers), length=None, body=False)
        exchange.end()
        return
    exchange.problem(
        error.status,
        error.detail,
        title=error.title,
        headers=error.headers,
        extra=getattr(error, "extra", None),  # e.g. the failing fields of a validation error
    )
