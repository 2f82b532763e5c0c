"""The pieces of the log pipeline, without a gateway: per-client budget, batch cutting."""

from __future__ import annotations

import os

from potok.observability.access_log import PIPE_BUF, _whole_lines
from potok.observability.client_log import OTHERS, ClientLineBudget, ThrottledClientLog
from potok.observability.logging import LineWriter


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
