# The C encoders and recorder (_encode.c); encode.py, trace.py, context.py and tracer.py
# have the same in Python, with their docs.
from collections.abc import Callable
from typing import Any

def server_span(
    fields: bytes,
    head: bytes,
    start: int,
    duration: float,
    attributes: bytes,
    addresses: bytes,
    path: bytes,
    request_id: str,
    agent: bytes,
    tail: bytes,
    /,
) -> bytes: ...
def attempt_span(
    fields: bytes, head: bytes, start: int, end: int, attributes: bytes, tail: bytes, /
) -> bytes: ...
def pool_entries(
    random: bytes, dense: bool, bound: bytes, /
) -> tuple[bytes, list[bytes], bytes] | None: ...

class Trace:
    """The recorder (trace.py's PythonRequestTrace in C; NativeRequestTrace subclasses it)."""

    fields: bytes
    line: bytes
    spans: list[bytes]
    tracestate: bytes | None
    parent_fields: bytes
    attempt: bytes | None
    attempt_method: bytes
    attempt_target: Any
    attempt_error: str | None
    start_ns: int
    attempt_start: int
    waiting_since: int
    attempts: int
    attempt_resend: int
    attempt_status: int
    def __init__(
        self,
        fields: bytes,
        line: bytes,
        parent_fields: bytes = b"",
        tracestate: bytes | None = None,
    ) -> None: ...
    def begin_attempt(self, method: bytes, target: Any, resend: int, /) -> bytes: ...
    def end_attempt(self) -> None: ...
    def finish(
        self,
        key: tuple[bytes, str, str, int, bytes, bytes | None, str],
        addresses: tuple[str, str],
        headers: list[tuple[bytes, bytes]],
        path: bytes,
        request_id: str,
        duration: float,
        described: dict[Any, tuple[bytes, bytes, bytes]],
        tracer: Any,
        /,
    ) -> list[bytes]: ...

def new_trace(fields: bytes, line: bytes, /) -> Trace: ...
def bind(
    cls: type[Trace],
    attempts: dict[Any, tuple[bytes, bytes]],
    describe_attempt: Callable[[Any], tuple[bytes, bytes]],
    addresses: dict[tuple[str, str], bytes],
    describe_addresses: Callable[[tuple[str, str]], bytes],
    agents: dict[bytes, bytes],
    describe_agent: Callable[[bytes], bytes],
    local_flags: bytes,
    remote_flags: bytes,
    /,
) -> None: ...

class Pool:
    """The id pool's state (context.py's IdPool subclasses it)."""

    lines: list[bytes]
    sampled: bytes
    raw: bytes
    next: int

class Begin:
    """The tracer's begin(exchange) in C (tracer.py's Tracer._begin in Python)."""

    def __init__(self, pool: Pool, continued: Callable[[Any], bool]) -> None: ...
    def __call__(self, exchange: Any, /) -> None: ...
