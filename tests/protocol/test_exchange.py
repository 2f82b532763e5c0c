"""The Exchange's side of the server boundary, on a real ClientConnection (a fake transport):
what policies and the upstream stage call (`resume`, `is_current`, `send_informational`,
`pause_reading`) instead of reaching into the connection."""

from __future__ import annotations

from potok.exchange import Exchange, ResponseHook
from potok.policies.base import SUSPENDED, Policy, RequestOutcome, Stage
from potok.policies.pipeline import Pipeline
from potok.policies.rate_limit.limiter import TooManyRequests
from potok.policies.security_headers import policy as security_headers
from potok.server.state import ServerState
from tests.protocol.memory import (
    FakeTransport,
    RecordingHandler,
    connect_client,
    read_response,
    read_responses,
    server_state,
    settle,
)

GET = b"GET /items HTTP/1.1\r\nHost: api.example\r\n\r\n"


class SuspendingHandler(RecordingHandler):
    """Runs every request through a pipeline whose one policy SUSPENDS it (as the batched
    Redis rate limiter does); the test plays the store's reply with `exchange.resume`."""

    def __init__(self) -> None:
        super().__init__()
        self.terminal_runs = 0

        def hold(exchange: Exchange) -> RequestOutcome:
            return SUSPENDED

        self.pipeline = Pipeline([Policy("rate_limit", Stage.LIMIT, on_request=hold)], self.answer)

    def answer(self, exchange: Exchange) -> None:
        self.terminal_runs += 1
        exchange.respond(200, b"passed", b"text/plain")

    def handle(self, exchange: Exchange) -> None:
        super().handle(exchange)
        self.pipeline.run(exchange)


def suspended_request() -> tuple[SuspendingHandler, FakeTransport, Exchange]:
    handler = SuspendingHandler()
    transport = connect_client(server_state(handler))
    transport.send(GET)
    (exchange,) = handler.handled
    assert exchange.suspended_in is handler.pipeline and transport.take() == b""
    return handler, transport, exchange


async def test_a_suspended_request_resumes_through_its_exchange() -> None:
    handler, transport, exchange = suspended_request()
    assert exchange.is_current()
    exchange.resume()
    response = read_response(transport.take())
    assert (response.status, response.body) == (200, b"passed")
    assert handler.terminal_runs == 1 and exchange.suspended_in is None
    exchange.resume()  # a second reply for the same request: nothing left to resume
    assert handler.terminal_runs == 1 and transport.take() == b""


async def test_a_suspended_request_is_refused_through_its_exchange() -> None:
    handler, transport, exchange = suspended_request()
    exchange.resume(TooManyRequests("over the limit"))
    response = read_response(transport.take())
    assert response.status == 429 and handler.terminal_runs == 0


async def test_resume_after_the_client_left_writes_nothing_and_raises_nothing() -> None:
    handler, transport, exchange = suspended_request()
    transport.reset()  # the client went away while the store was asked
    await settle()
    assert not exchange.is_current()
    assert exchange.status == 499 and handler.finished_exchanges == [exchange]
    exchange.resume()
    exchange.resume(TooManyRequests("over the limit"))
    assert handler.terminal_runs == 0
    assert transport.written == [] and transport.written_after_close == []


async def test_an_earlier_exchange_is_not_current_once_the_next_one_is_answered() -> None:
    handler = RecordingHandler()
    transport = connect_client(server_state(handler))
    transport.send(GET)
    first = handler.handled[0]
    first.respond(200, b"one", b"text/plain")
    transport.send(GET)
    second = handler.handled[1]
    assert not first.is_current() and second.is_current()
    # A late answer for the first request (a slow store's reply) cannot reach the second's.
    first.send_informational(103, [(b"Link", b"</a.css>; rel=preload")])
    first.respond(500, b"late", b"text/plain")
    second.send_informational(103, [(b"Link", b"</b.css>; rel=preload")])
    second.respond(200, b"two", b"text/plain")
    one, hints, two = read_responses(transport.take())
    assert (hints.status, hints.header("Link")) == (103, b"</b.css>; rel=preload")
    assert (one.body, two.body) == (b"one", b"two")


async def test_reading_pauses_through_the_exchange_are_counted_with_the_servers() -> None:
    handler = RecordingHandler()
    transport = connect_client(server_state(handler))
    transport.send(GET)
    (exchange,) = handler.handled
    exchange.pause_reading()
    exchange.pause_reading()
    exchange.resume_reading()
    assert not transport.reading  # one pause still holds
    exchange.resume_reading()
    assert transport.reading and transport.reading_calls == ["pause", "resume"]


async def test_an_answer_before_a_route_carries_the_responders_global_headers() -> None:
    class Handler(RecordingHandler):
        hooks = (security_headers.own_pages_csp().on_response,)

        @property
        def answer_hooks(self) -> tuple[ResponseHook, ...]:
            return self.hooks  # type: ignore[return-value]

    handler = Handler()
    state: ServerState = server_state(handler)
    transport = connect_client(state)
    transport.send(GET)
    (exchange,) = handler.handled
    assert exchange.route is None
    exchange.problem(404, "no route")
    response = read_response(transport.take())
    assert response.status == 404 and response.header("Content-Security-Policy") is not None
