"""Request-head checks of the connection: Host syntax, transfer codings, header names."""

from __future__ import annotations

import pytest

from potok.config.models import GatewayConfig
from potok.server.connection import _transfer_codings_problem, valid_host


@pytest.mark.parametrize(
    "host",
    [
        b"example.com",
        b"example.com:8080",
        b"EXAMPLE.com:",
        b"127.0.0.1",
        b"127.0.0.1:80",
        b"[::1]",
        b"[::1]:8080",
        b"[2001:db8::7]",
        b"[::ffff:127.0.0.1]",
        b"[v1.fe80::a+en1]",
        b"a_b.c~d",
        b"xn--bcher-kva.example",
        b"%41bc",
    ],
)
def test_valid_hosts(host):
    assert valid_host(host)


@pytest.mark.parametrize(
    "host",
    [
        b"a b",
        b"<script>",
        b"a/b",
        b"x@y",
        b"a?b",
        b"a#b",
        b"[zz::1]",
        b"[::1",
        b"::1",
        b"[::1]x",
        b"a:8o",
        b"a:80:80",
        b"%4",
        b"\xc3\xa9.example",
        b'"quoted"',
    ],
)
def test_invalid_hosts(host):
    assert not valid_host(host)


@pytest.mark.parametrize(
    ("value", "status"),
    [
        (b"chunked", None),
        (b"Chunked", None),
        (b" chunked ", None),
        (b"gzip, chunked", 501),
        (b"gzip,chunked", 501),
        (b"gzip,  , chunked", 501),
        (b"chunked, chunked", 400),
        (b"chunked, gzip", None),  # not ending in chunked: llhttp answers 400
        (b"gzip", None),
    ],
)
def test_transfer_codings(value, status):
    problem = _transfer_codings_problem(value)
    assert (problem.status if problem is not None else None) == status


def test_escaped_slashes_is_validated_naming_the_field():
    route = {"match": {"prefix": "/"}, "service": "up", "escaped_slashes": "decode"}
    config = {"services": {"up": {"targets": ["http://127.0.0.1:1"]}}, "routes": [route]}
    with pytest.raises(ValueError, match=r"routes\.0\.escaped_slashes"):
        GatewayConfig.model_validate(config)
