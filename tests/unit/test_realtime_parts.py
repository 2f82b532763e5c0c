"""Realtime parts without sockets: dedup window, history, channel rules, protocol, frames, config."""

from __future__ import annotations

import pytest
from pydantic import ValidationError
from websockets.frames import Frame, Opcode
from websockets.streams import StreamReader

from potok.config.models import GatewayConfig
from potok.identity.principal import Principal
from potok.realtime import protocol
from potok.realtime.channels import ChannelRules, compile_pattern
from potok.realtime.config import ChannelRuleConfig
from potok.realtime.dedup import DedupWindow
from potok.realtime.events import BadEvent, decode_event, make_event, valid_channel
from potok.realtime.history import MemoryHistory
from potok.server.websocket import text_frame
from tests.support.realtime import realtime_config


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


# -- dedup window -----------------------------------------------------------------------


def test_dedup_lets_an_id_through_once_per_window():
    clock = Clock()
    window = DedupWindow(10.0, 100, clock)
    assert window.first_time("a")
    assert not window.first_time("a")
    clock.now += 9
    assert not window.first_time("a")
    clock.now += 2  # past the window: forgotten
    assert window.first_time("a")


def test_dedup_is_bounded_in_size():
    window = DedupWindow(3600.0, 3, Clock())
    for name in "abcd":
        assert window.first_time(name)
    assert len(window) <= 3
    assert window.first_time("a")  # the oldest was forgotten to make room


# -- memory history ------------------------------------------------------------------------


def _event(channel: str, data: object, ts: float = 1000.0):
    event = make_event(channel, "t", data)
    event.ts = ts
    return event


def test_history_offsets_grow_across_channels_and_recover():
    history = MemoryHistory(size=3, ttl=60, max_channels=10, clock=Clock())
    offsets = [history.append(_event("a", i)) for i in range(2)]
    history.append(_event("b", "other"))
    offsets.append(history.append(_event("a", 2)))
    assert offsets == [1, 2, 4]
    page = history.since("a", 1)
    assert page.recovered and [e.data for e in page.events] == [1, 2] and page.latest == 4
    assert history.since("a", 4).recovered and history.since("a", 4).events == ()


def test_history_not_recovered_when_trimmed_expired_or_unknown():
    clock = Clock()
    history = MemoryHistory(size=2, ttl=60, max_channels=10, clock=clock)
    first = history.append(_event("a", 0))
    for i in range(1, 4):
        history.append(_event("a", i))
    page = history.since("a", first)
    assert not page.recovered and [e.data for e in page.events] == [2, 3]
    assert not history.since("a", 999).recovered
    clock.now += 120  # everything expired
    assert not history.since("a", 3).recovered


def test_history_keeps_at_most_max_channels():
    history = MemoryHistory(size=5, ttl=60, max_channels=2, clock=Clock())
    for name in ("a", "b", "c"):
        history.append(_event(name, name))
    assert history.since("a", 0).events == ()
    assert [e.data for e in history.since("c", 0).events] == ["c"]


# -- channel rules ---------------------------------------------------------------------------

ALICE = Principal(subject="alice", kind="user", roles=frozenset({"reader"}), org="acme")


@pytest.mark.parametrize(
    ("pattern", "channel", "matches"),
    [
        ("public:*", "public:news", True),
        ("public:*", "public:a:b", True),
        ("public:*", "public:", False),
        ("a:*:c", "a:b:c", True),
        ("a:*:c", "a:b:x:c", False),
        ("org:{org}:tasks", "org:acme:tasks", True),
        ("org:{org}:tasks", "org:acme:tasks:x", False),
        ("x.y", "xzy", False),  # '.' is literal
    ],
)
def test_patterns(pattern, channel, matches):
    assert (compile_pattern(pattern).match(channel) is not None) is matches


def test_rules_bind_org_sub_and_roles():
    rules = ChannelRules(
        [
            ChannelRuleConfig(pattern="org:{org}:tasks"),
            ChannelRuleConfig(pattern="user:{sub}:notifications"),
            ChannelRuleConfig(pattern="ops:*", roles=("admin",)),
            ChannelRuleConfig(pattern="public:*", publish=True),
        ]
    )
    assert rules.decide("org:acme:tasks", ALICE, "subscribe").allowed
    assert not rules.decide("org:globex:tasks", ALICE, "subscribe").allowed
    assert rules.decide("user:alice:notifications", ALICE, "subscribe").allowed
    assert not rules.decide("user:bob:notifications", ALICE, "subscribe").allowed
    assert not rules.decide("ops:alerts", ALICE, "subscribe").allowed
    assert not rules.decide("org:acme:tasks", ALICE, "publish").allowed
    assert rules.decide("public:chat", ALICE, "publish").allowed
    assert not rules.decide("unknown:x", ALICE, "subscribe").allowed
    no_org = Principal(subject="svc", kind="user")
    assert not rules.decide("org:acme:tasks", no_org, "subscribe").allowed


def test_bad_patterns_are_refused():
    for pattern in ("org:{tenant}:tasks", "a b", "x/y", ""):
        with pytest.raises(ValidationError):
            ChannelRuleConfig(pattern=pattern)


# -- protocol and events ------------------------------------------------------------------------


def test_protocol_parse():
    message = protocol.parse(b'{"type":"subscribe","channel":"a","since":3,"ref":"r1"}')
    assert (message.kind, message.channel, message.since, message.ref) == (
        "subscribe",
        "a",
        3,
        "r1",
    )
    assert protocol.parse(b'{"type":"message","channel":"c","data":[1]}').event == "message"
    for bad in (
        b"nope",
        b"[]",
        b'{"type":"x"}',
        b'{"type":"authenticate"}',
        b'{"type":"subscribe","channel":"a","since":-1}',
        b'{"type":"subscribe","channel":"a","since":true}',
        b'{"type":"unsubscribe"}',
    ):
        with pytest.raises(protocol.ProtocolError):
            protocol.parse(bad)


def test_events_are_checked():
    assert valid_channel("org:acme:tasks") and valid_channel("a.b")
    assert not valid_channel("a..b") and not valid_channel(".a") and not valid_channel("a b")
    with pytest.raises(BadEvent):
        make_event("ok", "bad type!", 1)
    with pytest.raises(BadEvent):
        make_event("ok", "t", 1, "bad id with spaces")
    event = decode_event(b'{"type":"t","data":1,"ts":5,"offset":9}', "chan")
    assert (event.channel, event.offset, event.ts) == ("chan", 9, 5.0)
    assert decode_event(b'{"data":1}', "c", 4).id == "c@4"
    assert decode_event(b'{"data":1}', "c", 4, "hdr-id").id == "hdr-id"
    for raw in (b"x", b"[1]", b'{"channel":"bad channel"}', b'{"channel":"c","id":7}'):
        with pytest.raises(BadEvent):
            decode_event(raw)


# -- frames ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("size", [0, 1, 125, 126, 65535, 65536, 200_000])
def test_text_frame_parses_as_one_unmasked_frame(size):
    payload = b"x" * size
    reader = StreamReader()
    reader.feed_data(text_frame(payload))
    parser = Frame.parse(reader.read_exact, mask=False)
    try:
        next(parser)
    except StopIteration as done:
        frame = done.value
    assert frame.opcode is Opcode.TEXT and frame.fin and frame.data == payload


# -- config ---------------------------------------------------------------------------------------


def test_memory_bus_with_several_workers_is_refused():
    config = realtime_config()
    config["server"] = {"workers": 2}
    with pytest.raises(ValidationError, match=r"realtime\.bus\.backend"):
        GatewayConfig.model_validate(config)
    config["realtime"]["bus"] = {"backend": "nats"}
    GatewayConfig.model_validate(config)


def test_redis_bus_needs_a_url_and_token_service_needs_enabling():
    config = realtime_config(bus={"backend": "redis"})
    with pytest.raises(ValidationError, match=r"realtime\.bus\.redis\.url"):
        GatewayConfig.model_validate(config)
    config["redis"] = {}
    GatewayConfig.model_validate(config)
    config = realtime_config(auth={"token_service": True})
    with pytest.raises(ValidationError, match=r"realtime\.auth\.token_service"):
        GatewayConfig.model_validate(config)
    with pytest.raises(ValidationError, match="trust the token service"):
        GatewayConfig.model_validate(realtime_config(auth={}))


class _Member:
    """A hub member that records what it is sent (instead of a socket)."""

    def __init__(self) -> None:
        self.outbox: list[bytes] = []
        self.written: list[bytes] = []
        self.last_seen = 0.0

    def write_frames(self, data: bytes) -> bool:
        self.written.append(data)
        return True

    def slow_consumer(self) -> None:
        raise AssertionError("not slow")

    def heartbeat(self, now: float) -> None:
        pass


async def test_memory_bus_event_in_history_and_still_on_its_way_is_sent_once():
    """The memory bus stores an event at once and delivers it on the next loop turn: a
    subscriber that resubscribes in between gets it from the history, and the live copy
    that follows must not be sent again (issue 13, item 13)."""
    import asyncio

    from potok.realtime.bus.memory import MemoryBus
    from potok.realtime.history import position_after
    from potok.realtime.hub import Hub
    from potok.realtime.metrics import RealtimeMetrics

    config = GatewayConfig.model_validate(realtime_config())
    assert config.realtime is not None
    hub = Hub(config.realtime.limits, RealtimeMetrics(None), DedupWindow(60, 100))
    bus = MemoryBus(MemoryHistory(10, 60, 10), DedupWindow(60, 100))
    await bus.start(hub.deliver, lambda kind: None)
    first = await bus.publish(make_event("public:race", "t", 1))
    member = _Member()
    await bus.publish(make_event("public:race", "t", 2))  # stored; delivery still queued
    hub.begin("public:race", member)
    page = await bus.history("public:race", first.offset or 0)
    assert [e.data for e in page.events] == [2]  # the client gets it from the history
    assert hub.finish("public:race", member, position_after(page.latest, first.offset, page)) == []
    await asyncio.sleep(0.01)  # the queued live delivery runs now
    await bus.publish(make_event("public:race", "t", 3))
    await asyncio.sleep(0.01)
    sent = b"".join(member.written)
    assert b'"data":2' not in sent and b'"data":3' in sent


async def test_a_session_timer_that_fires_early_is_rearmed_not_forgotten() -> None:
    # The loop's timers tick on their own clock: a timer due at `exp` may run while the
    # wall clock still reads a hair before it. The session must still end at expiry.
    import asyncio

    from potok.identity.verifier import TokenRejected
    from potok.realtime.session import SessionGuard

    class WallClockBehind:
        leeway = 0.0

        def __init__(self, expires: float) -> None:
            self.expires = expires
            self.calls = 0

        def now(self) -> float:
            return self.expires - 0.05  # scheduling: 50 ms to go

        def check_still_valid(self, principal: Principal) -> None:
            self.calls += 1
            if self.calls > 1:  # the first check runs early; the re-armed one on time
                raise TokenRejected("token expired")

    ended: list[tuple[str, str]] = []
    auth = WallClockBehind(expires=1_000.0)
    guard = SessionGuard(auth, lambda code, reason: ended.append((code, reason)))  # type: ignore[arg-type]
    guard.admit(Principal(subject="u", kind="user", expires_at=auth.expires))
    await asyncio.sleep(0.2)
    assert ended == [(protocol.TOKEN_EXPIRED, "token expired")]
    assert auth.calls == 2
