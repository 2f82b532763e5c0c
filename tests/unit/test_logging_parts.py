"""The pieces of the log pipeline, without a gateway: per-client budget, batch cutting,
the access line's escaping."""

from __future__ import annotations

import asyncio
import json
import os
import re
import sys

import orjson

from potok.exchange import Exchange
from potok.observability.access_log import PIPE_BUF, AccessLog, _whole_lines
from potok.observability.client_log import OTHERS, ClientLineBudget, ThrottledClientLog
from potok.observability.logging import SHAPE, LineWriter
from potok.observability.request_id import new_request_id


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_budget_admits_a_few_per_client_per_second_and_counts_the_rest():
    clock = Clock()
    budget = ClientLineBudget(per_second=3, clock=clock)
    assert [budget.admit("a") for _ in range(5)] == [True, True, True, False, False]
    assert budget.admit("b")  # another client has its own budget
    assert budget.pending and budget.take_suppressed() == {}  # the second is not over
    clock.now += 1.0
    assert budget.take_suppressed() == {"a": 2}
    assert budget.take_suppressed() == {} and not budget.pending
    assert budget.admit("a")  # a new second, a new budget


def test_budget_is_bounded_in_clients():
    budget = ClientLineBudget(per_second=1, max_clients=2, clock=Clock())
    assert budget.admit("a") and budget.admit("b")
    assert budget.admit("c")  # the first of the others
    assert not budget.admit("d")  # counted with "c" under OTHERS
    budget._clock.now += 1  # type: ignore[attr-defined]
    assert budget.take_suppressed() == {OTHERS: 1}


class Lines:
    def __init__(self) -> None:
        self.lines: list[tuple[str, dict[str, object]]] = []

    def info(self, event: str, **fields: object) -> None:
        self.lines.append((event, fields))


def test_throttled_log_writes_a_summary_with_the_count():
    clock = Clock()
    logger = Lines()
    throttled = ThrottledClientLog(logger, "refused", ClientLineBudget(2, clock=clock))
    for _ in range(2):
        throttled.info("a", status=400)
    clock.now += 1.0
    throttled.info("a", status=400)
    throttled.info("a", status=400)
    throttled.info("a", status=400)
    clock.now += 1.0
    throttled._summarise()
    assert [e for e, _ in logger.lines] == ["refused"] * 4 + ["refused: lines suppressed"]
    assert logger.lines[-1][1] == {"client_ip": "a", "suppressed": 1}


def test_batches_are_cut_at_line_ends_into_atomic_writes():
    lines = [b'{"n": %d, "pad": "%s"}' % (i, b"x" * (i * 37 % 900)) for i in range(200)]
    batch = b"\n".join(lines) + b"\n"
    pieces = _whole_lines(batch)
    assert b"".join(pieces) == batch
    assert all(len(p) <= PIPE_BUF and p.endswith(b"\n") for p in pieces)
    long_line = b"y" * (PIPE_BUF * 2) + b"\n"
    assert _whole_lines(b"a\n" + long_line + b"b\n") == [b"a\n", long_line, b"b\n"]


def test_line_writer_writes_a_record_and_its_newline_together(tmp_path):
    path = tmp_path / "log"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND)
    try:
        writer = LineWriter(fd)
        writer.info('{"event": "a"}')
        writer.error(b'{"event": "b"}')
    finally:
        os.close(fd)
    assert path.read_bytes() == b'{"event": "a"}\n{"event": "b"}\n'


class _Peer:
    peer_ip = sys.intern("10.0.0.7")


class _Identity:
    def __init__(self, subject: str) -> None:
        self.subject = subject


def _exchange(
    path: bytes, agent: bytes | None, client_ip: str | None, subject: str | None
) -> Exchange:
    exchange = Exchange(_Peer(), 0.0)  # type: ignore[arg-type]
    exchange.request_id = "req-1"
    exchange.method = b"POST"
    exchange.path = path
    exchange.route_name, exchange.service_name, exchange.target_name = "r", "s", "10.0.0.1:80"
    exchange.status = 201
    exchange.bytes_in, exchange.bytes_out = 12, 345
    exchange.upstream_duration = 0.0004
    if client_ip is not None:
        exchange.client_ip = client_ip
    if subject is not None:
        exchange.identity = _Identity(subject)
    exchange.headers = [(b"Host", b"x")] + ([(b"User-Agent", agent)] if agent is not None else [])
    return exchange


ODD_VALUES = [
    (b"/plain", b"curl/8.5.0", None, None),
    (b'/a"quote\\and\\backslash', b'agent "with" \\ and\ttab', None, "user-1"),
    (b"/latin", "caf\u00e9/1".encode("latin-1"), '::1%"x\\', "line\nbreak \u2028 \U0001f600"),
    (b"/surrogate", None, None, "lone \ud800 surrogate"),
    (b"/same-agent-again", b'agent "with" \\ and\ttab', "203.0.113.9", None),
]


async def test_access_lines_are_what_a_json_serialiser_writes_whatever_the_values(tmp_path):
    log = AccessLog(str(tmp_path / "access.log"), worker="3")
    for path, agent, client_ip, subject in ODD_VALUES:
        log.write(_exchange(path, agent, client_ip, subject), 0.0012)
    log.close()
    lines = (tmp_path / "access.log").read_bytes().split(b"\n")
    assert lines[-1] == b""
    for line, (path, agent, client_ip, subject) in zip(lines[:-1], ODD_VALUES, strict=True):
        entry = json.loads(line)
        assert list(entry) == [*SHAPE, "method", "path", "protocol", "route", "service", "target", "status",
                               "duration_ms", "upstream_ms", "bytes_in", "bytes_out", "client_ip",
                               "user_id", "user_agent"]  # fmt: skip
        assert entry == {
            "timestamp": entry["timestamp"],
            "level": "info",
            "event": "request",
            "worker": "3",
            "request_id": "req-1",
            "method": "POST",
            "path": path.decode("latin-1"),
            "protocol": "HTTP/1.1",
            "route": "r",
            "service": "s",
            "target": "10.0.0.1:80",
            "status": 201,
            "duration_ms": 1.2,
            "upstream_ms": 0.4,
            "bytes_in": 12,
            "bytes_out": 345,
            "client_ip": client_ip or "10.0.0.7",
            "user_id": subject,
            "user_agent": agent.decode("latin-1") if agent is not None else None,
        }
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", entry["timestamp"])
        if subject is None or "\ud800" not in subject:  # orjson refuses a lone surrogate
            # Byte for byte what orjson writes, apart from the durations' last zeros.
            expected = (
                orjson.dumps(entry).replace(b":1.2,", b":1.200,").replace(b":0.4,", b":0.400,")
            )
            assert line == expected


def test_durations_have_three_decimals_rounded_to_the_nearest_microsecond(tmp_path):
    log = AccessLog(str(tmp_path / "access.log"))
    exchange = _exchange(b"/", None, None, None)
    loop = asyncio.new_event_loop()
    try:
        for seconds, upstream in ((0.0, None), (0.0000004, 0.0000006), (12.3456789, 1.0)):
            exchange.upstream_duration = upstream
            loop.run_until_complete(_write(log, exchange, seconds))
    finally:
        log.close()
        loop.close()
    entries = [json.loads(line) for line in (tmp_path / "access.log").read_text().splitlines()]
    assert [(e["duration_ms"], e["upstream_ms"]) for e in entries] == [
        (0.0, None), (0.0, 0.001), (12345.679, 1000.0),
    ]  # fmt: skip
    assert (
        '"duration_ms":12345.679,"upstream_ms":1000.000,' in (tmp_path / "access.log").read_text()
    )


async def _write(log: AccessLog, exchange: Exchange, seconds: float) -> None:
    log.write(exchange, seconds)


def test_new_request_ids_are_32_hex_digits_leading_zeros_kept():
    ids = [new_request_id() for _ in range(2000)]
    assert len(set(ids)) == len(ids)
    assert all(re.fullmatch(r"[0-9a-f]{32}", rid) for rid in ids)
    assert any(rid.startswith("0") for rid in ids)  # 1 in 16 has a high nibble of 0
