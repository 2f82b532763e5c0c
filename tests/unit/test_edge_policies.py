"""ip_filter rules, security headers, concurrency slots and validation errors, without sockets."""

from __future__ import annotations

from typing import Any

import pytest

from potok.policies.concurrency_limit.policy import InFlight
from potok.policies.ip_filter.config import IpFilterConfig
from potok.policies.ip_filter.policy import AddressRules
from potok.policies.security_headers.config import SecurityHeadersConfig
from potok.policies.security_headers.policy import OWN_PAGES_CSP, security_headers
from potok.policies.validate.policy import query_converter
from potok.policies.validate.schema import CompiledSchema


@pytest.mark.parametrize(
    ("ip", "admitted"),
    [
        ("10.1.2.3", True),
        ("10.9.0.1", False),  # inside the allow list but denied: deny wins
        ("192.0.2.1", False),  # not on the allow list
        ("::ffff:10.1.2.3", True),  # IPv4-mapped IPv6 is the IPv4 address
        ("2001:db8::1", True),
        ("2001:db8:dead::1", False),
        ("fe80::1%eth0", False),
        ("unix", False),
    ],
)
def test_address_rules(ip: str, admitted: bool) -> None:
    rules = AddressRules(("10.0.0.0/8", "2001:db8::/32"), ("10.9.0.0/16", "2001:db8:dead::/48"))
    assert rules.admits(ip) is admitted
    assert rules.admits(ip) is admitted  # memoised answer is the same


def test_deny_only_lets_everyone_else_in() -> None:
    rules = AddressRules((), ("203.0.113.0/24",))
    assert rules.admits("198.51.100.1") and not rules.admits("203.0.113.9")


def test_ip_filter_needs_a_list() -> None:
    with pytest.raises(ValueError, match="allow"):
        IpFilterConfig()
    with pytest.raises(ValueError, match="CIDR"):
        IpFilterConfig(deny=("10.0.0.0/33",))


def test_security_headers_defaults_and_own_pages_csp() -> None:
    headers = dict(security_headers(SecurityHeadersConfig(), own_pages=False))
    assert headers == {
        b"Strict-Transport-Security": b"max-age=31536000; includeSubDomains",
        b"X-Content-Type-Options": b"nosniff",
        b"X-Frame-Options": b"DENY",
        b"Referrer-Policy": b"strict-origin-when-cross-origin",
    }
    own = dict(security_headers(SecurityHeadersConfig(), own_pages=True))
    assert own[b"Content-Security-Policy"] == OWN_PAGES_CSP.encode()
    with pytest.raises(ValueError, match="use one of"):
        SecurityHeadersConfig(referrer_policy="sometimes")


def test_in_flight_slots_free_when_holders_finish() -> None:
    done: set[int] = set()
    slots: InFlight[int] = InFlight(2, lambda holder: holder not in done)
    assert slots.acquire("k", 1) and slots.acquire("k", 2)
    assert not slots.acquire("k", 3)
    assert slots.acquire("other", 4)
    done.add(1)
    assert slots.acquire("k", 5)
    assert slots.count("k") == 2
    done.update({2, 4, 5})
    slots.sweep()
    assert slots.held == {}


SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["name", "price"],
    "additionalProperties": False,
    "properties": {
        "name": {"type": "string", "minLength": 1},
        "price": {"type": "number", "minimum": 0},
        "tags": {"type": "array", "items": {"type": "string"}},
    },
}


def test_schema_lists_every_failing_field() -> None:
    schema = CompiledSchema(SCHEMA, "body")
    assert schema.errors({"name": "x", "price": 1}, 20) == []
    errors = schema.errors({"price": -1, "tags": ["a", 2], "color": "red"}, 20)
    assert {e["field"]: e["message"] for e in errors} == {
        "body.name": "required",
        "body.price": "-1 is less than the minimum of 0",
        "body.tags[1]": "2 is not of type 'string'",
        "body.color": "not allowed",
    }
    assert len(schema.errors({"tags": [1, 2, 3, 4]}, 3)) == 3


def test_schema_of_a_later_draft_still_validates() -> None:
    schema = CompiledSchema(
        {"$schema": "https://json-schema.org/draft/2020-12/schema", **SCHEMA}, "body"
    )
    assert [e["field"] for e in schema.errors({"name": "x"}, 20)] == ["body.price"]


def test_query_is_converted_by_schema_types() -> None:
    convert = query_converter(
        {
            "type": "object",
            "properties": {
                "page": {"type": "integer"},
                "ratio": {"type": "number"},
                "full": {"type": "boolean"},
                "ids": {"type": "array", "items": {"type": "integer"}},
            },
        }
    )
    assert convert(b"page=2&ratio=0.5&full=true&ids=1&ids=2&q=x&q=y&e=") == {
        "page": 2,
        "ratio": 0.5,
        "full": True,
        "ids": [1, 2],
        "q": ["x", "y"],
        "e": "",
    }
    assert convert(b"page=two") == {"page": "two"}  # left as is: the schema reports it
