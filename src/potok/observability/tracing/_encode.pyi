# The C encoders (_encode.c); encode.py has the same in Python, with their docs.
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
