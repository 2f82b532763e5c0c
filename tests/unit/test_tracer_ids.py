"""The tracer's ids: drawn in pools of 512 requests, sliced per request."""

from __future__ import annotations

import os
import re
from types import SimpleNamespace
from typing import Any

from potok.observability.tracing.config import TracingConfig
from potok.observability.tracing.context import ID_POOL, LINE, POOLED, IdPool
from potok.observability.tracing.tracer import Tracer
from potok.upstream.forwarded import TrustedProxies

HEX32 = re.compile(r"[0-9a-f]{32}")
TRACEPARENT = re.compile(rb"traceparent: 00-([0-9a-f]{32})-([0-9a-f]{16})-0[01]\r\n")


def tracer(ratio: float) -> Tracer:
    config = TracingConfig(enabled=True, sample_ratio=ratio)
    return Tracer(config, exporter=SimpleNamespace(), trusted=TrustedProxies(()))  # type: ignore[arg-type]


def exchange() -> Any:
    return SimpleNamespace(headers=[], peer_ip="127.0.0.1", trace_headers=False)


def test_ids_stay_distinct_across_pool_refills() -> None:
    unsampled = tracer(0.0)
    traces = [unsampled.begin(exchange()) for _ in range(1_300)]  # two refills
    trace_ids = [trace.trace_id for trace in traces]
    assert all(HEX32.fullmatch(trace_id) for trace_id in trace_ids)
    assert len(set(trace_ids)) == len(trace_ids)
    span_ids = []
    for trace in traces:
        assert not trace.sampled
        match = TRACEPARENT.fullmatch(trace.upstream_lines)
        assert match is not None and match.group(1).decode() == trace.trace_id
        span_ids.append(match.group(2))
    assert len(set(span_ids)) == len(span_ids)


def test_two_tracers_draw_their_own_ids() -> None:
    first, second = tracer(0.0), tracer(0.0)
    a = {first.begin(exchange()).trace_id for _ in range(600)}
    b = {second.begin(exchange()).trace_id for _ in range(600)}
    assert not a & b


def test_the_ratio_decides_on_the_pooled_ids() -> None:
    half = tracer(0.5)
    sampled = sum(half.begin(exchange()).sampled for _ in range(2_000))
    # Binomial(2000, 0.5): sd 22.4; 850..1150 is beyond 6 sd either way.
    assert 850 <= sampled <= 1_150
    assert all(tracer(1.0).begin(exchange()).sampled for _ in range(600))


def test_a_pool_entry_is_its_ids_raw_and_in_its_line() -> None:
    pool = IdPool()
    pool.refill()
    for index in (0, 1, 255, POOLED - 1):
        raw = pool.raw[index * 24 : index * 24 + 24]
        line = pool.lines[index * LINE : index * LINE + LINE]
        assert line == f"traceparent: 00-{raw[:16].hex()}-{raw[16:].hex()}-00\r\n".encode()
    assert len(pool.lines) == POOLED * LINE and len(pool.raw) == POOLED * 24


def test_span_ids_come_from_the_pool_in_order_and_refill_it() -> None:
    pool = IdPool()
    seen = set()
    for _ in range(POOLED + 10):
        raw, digits = pool.span()
        assert digits == raw.hex().encode()
        seen.add(raw)
    assert len(seen) == POOLED + 10
    assert pool.next == 10


def test_a_forked_child_draws_ids_of_its_own() -> None:
    ID_POOL.take()  # the parent's pool is filled
    read, write = os.pipe()
    child = os.fork()
    if child == 0:  # pragma: no cover - the child process
        os.write(write, ID_POOL.lines[:LINE] if ID_POOL.next == POOLED else b"shared")
        os._exit(0)
    os.close(write)
    with os.fdopen(read, "rb") as pipe:
        seen = pipe.read()
    os.waitpid(child, 0)
    assert seen == b""  # emptied at the fork: the child's first take refills it
