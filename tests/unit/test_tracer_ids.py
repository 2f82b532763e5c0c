"""The tracer's ids: drawn in pools of 512 requests, sliced per request."""

from __future__ import annotations

import os
import re
from types import SimpleNamespace
from typing import Any

import pytest

from potok.observability.tracing.config import TracingConfig
from potok.observability.tracing.context import ALL, FIELDS, ID_POOL, POOLED, IdPool
from potok.observability.tracing.tracer import Tracer
from potok.upstream.forwarded import TrustedProxies

TRACEPARENT = re.compile(rb"traceparent: 00-([0-9a-f]{32})-([0-9a-f]{16})-0[01]\r\n")


def tracer(ratio: float) -> Tracer:
    config = TracingConfig(enabled=True, sample_ratio=ratio)
    return Tracer(config, exporter=SimpleNamespace(), trusted=TrustedProxies(()))  # type: ignore[arg-type]


def exchange() -> Any:
    return SimpleNamespace(
        headers=[], peer_ip="127.0.0.1", trace_headers=False, trace=None, trace_lines=b""
    )


def begun(tracer: Tracer) -> Any:
    request = exchange()
    tracer.begin(request)
    return request


def test_ids_stay_distinct_across_pool_refills() -> None:
    unsampled = tracer(0.0)
    requests = [begun(unsampled) for _ in range(1_300)]  # two refills
    trace_ids, span_ids = [], []
    for request in requests:
        assert request.trace is None
        match = TRACEPARENT.fullmatch(request.trace_lines)
        assert match is not None and request.trace_lines.endswith(b"-00\r\n")
        trace_ids.append(match.group(1))
        span_ids.append(match.group(2))
    assert len(set(trace_ids)) == len(trace_ids)
    assert len(set(span_ids)) == len(span_ids)


def test_two_tracers_draw_their_own_ids() -> None:
    first, second = tracer(0.0), tracer(0.0)
    a = {begun(first).trace_lines[16:48] for _ in range(600)}
    b = {begun(second).trace_lines[16:48] for _ in range(600)}
    assert not a & b


@pytest.mark.parametrize("ratio", [0.5, 0.01, 0.0625, 0.9999])
def test_the_ratio_decides_on_the_trace_ids_low_64_bits(ratio: float) -> None:
    # As TraceIdRatioBased: sampled exactly when the low 64 bits are under ratio * 2**64
    # (the tracer decides most requests on one hex digit: the rest must agree).
    by_ratio = tracer(ratio)
    bound = round(ratio * (1 << 64))
    sampled = 0
    for _ in range(3_000):
        request = begun(by_ratio)
        low = int(request.trace_lines[32:48], 16)
        assert (request.trace is not None) == (low < bound)
        sampled += request.trace is not None
    expected = 3_000 * ratio
    assert abs(sampled - expected) <= 6 * (expected * (1 - ratio)) ** 0.5 + 1


def test_every_request_is_sampled_at_one_and_none_at_zero() -> None:
    assert all(begun(tracer(1.0)).trace is not None for _ in range(600))
    assert all(begun(tracer(0.0)).trace is None for _ in range(600))


def test_a_sampled_requests_line_names_its_first_attempt_span() -> None:
    request = begun(tracer(1.0))
    trace = request.trace
    assert request.trace_lines == trace.line
    fields = trace.fields
    trace_hex, span_hex = fields[2:18].hex(), fields[48:56].hex()
    assert request.trace_lines == f"traceparent: 00-{trace_hex}-{span_hex}-01\r\n".encode()


@pytest.mark.parametrize(("bound", "flags"), [(ALL, "01"), (b"0" * 16, "00")])
def test_a_pool_entry_is_its_span_fields_and_its_line(bound: bytes, flags: str) -> None:
    pool = IdPool()
    pool.configure(bound, dense=True)
    pool.refill()
    for index in (0, 1, 255, POOLED - 1):
        fields = pool.fields(index)
        line = pool.lines[index]
        trace, server, attempt = fields[2:18], fields[20:28], fields[48:56]
        assert fields == (
            b"\x0a\x10" + trace + b"\x12\x08" + server
            + b"\x0a\x10" + trace + b"\x12\x08" + attempt + b"\x22\x08" + server
        )  # fmt: skip
        assert line == f"traceparent: 00-{trace.hex()}-{attempt.hex()}-{flags}\r\n".encode()
        assert pool.sampled[index] == (flags == "01")
    assert len(pool.lines) == POOLED and len(pool.raw) == POOLED * FIELDS


def test_sparse_and_dense_pools_write_the_same_fields() -> None:
    dense = IdPool()
    dense.refill()
    sparse = IdPool()
    sparse.configure(ALL, dense=False)
    sparse.refill()
    assert sparse.raw == b""
    sparse.random, sparse.lines = dense.random, dense.lines
    assert all(sparse.fields(i) == dense.fields(i) for i in range(POOLED))


def test_a_new_ratio_drops_the_entries_decided_under_the_old_one() -> None:
    pool = IdPool()
    pool.take()
    pool.configure(b"0" * 16, dense=True)
    assert pool.next == POOLED and not pool.lines  # drawn again at the next take
    pool.take()
    assert not any(pool.sampled)


def test_ids_come_from_the_pool_in_order_and_refill_it() -> None:
    pool = IdPool()
    seen = set()
    for _ in range(POOLED + 10):
        seen.add(pool.fields(pool.take())[20:28])
    assert len(seen) == POOLED + 10
    assert pool.next == 10


def test_a_forked_child_draws_ids_of_its_own() -> None:
    ID_POOL.take()  # the parent's pool is filled
    read, write = os.pipe()
    child = os.fork()
    if child == 0:  # pragma: no cover - the child process
        os.write(write, b"".join(ID_POOL.lines) if ID_POOL.next == POOLED else b"shared")
        os._exit(0)
    os.close(write)
    with os.fdopen(read, "rb") as pipe:
        seen = pipe.read()
    os.waitpid(child, 0)
    assert seen == b""  # emptied at the fork: the child's first take refills it
