"""X-Forwarded-For/Proto/Host: believed only from trusted proxies."""

from __future__ import annotations

import ipaddress
from types import SimpleNamespace

import pytest

from potok.upstream.forwarded import TrustedProxies, apply_forwarding

TRUSTED = TrustedProxies(("10.0.0.0/8", "fd00::/8"))


def exchange(
    peer: str, xff: bytes | None = None, xfp: bytes | None = None, xfh: bytes | None = None
):
    """The attributes apply_forwarding reads and writes, as the connection leaves them."""
    return SimpleNamespace(
        peer_ip=peer,
        client_ip=peer,
        forwarded_for=xff,
        forwarded_proto=xfp,
        forwarded_host=xfh,
        host=b"gw.example.com",
        headers=[],
        proxy_headers=None,
    )


def forwarded(trusted: TrustedProxies, peer: str, xff=None, xfp=None, xfh=None):
    ex = exchange(peer, xff, xfp, xfh)
    apply_forwarding(ex, trusted)
    return ex


# TrustedProxies -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("ip", "trusted"),
    [
        ("10.0.0.1", True),
        ("10.255.255.255", True),
        ("11.0.0.1", False),
        ("fd00::1", True),
        ("fe80::1", False),
        ("2001:db8::1", False),
        ("garbage", False),
        ("", False),
        ("unix", False),
    ],
)
def test_trusted_proxies_membership(ip, trusted):
    assert TRUSTED.contains(ip) is trusted
    assert TRUSTED.contains(ip) is trusted  # the memoised answer is the same


def test_trusted_proxies_truthiness():
    assert TRUSTED
    assert not TrustedProxies(())


def test_an_ipv4_mapped_peer_is_matched_against_ipv4_cidrs():
    # A dual-stack listener (server.host "::") sees IPv4 peers as ::ffff:a.b.c.d.
    assert TrustedProxies(("10.0.0.0/8",)).contains("::ffff:10.0.0.1")


# Untrusted peers ----------------------------------------------------------------------


@pytest.mark.parametrize("trusted", [TrustedProxies(()), TRUSTED])
@pytest.mark.parametrize(
    ("xff", "xfp", "xfh"),
    [
        (None, None, None),
        (b"1.1.1.1", b"https", b"evil.example"),
        (b"10.0.0.1, 10.0.0.2", b"https", None),
        (b"garbage", None, b"x"),
    ],
)
def test_an_untrusted_peer_is_the_client_and_its_headers_are_replaced(trusted, xff, xfp, xfh):
    ex = forwarded(trusted, "203.0.113.7", xff, xfp, xfh)
    assert ex.client_ip == "203.0.113.7"
    assert ex.forwarded_for == b"203.0.113.7"
    assert ex.forwarded_proto == b"http"
    assert ex.forwarded_host == b"gw.example.com"


# Trusted peers ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("peer", "xff", "client", "chain"),
    [
        # no chain: the trusted proxy itself is the client
        ("10.0.0.1", None, "10.0.0.1", b"10.0.0.1"),
        # the chain is kept, the peer appended, the right-most untrusted address is the client
        ("10.0.0.1", b"203.0.113.7", "203.0.113.7", b"203.0.113.7, 10.0.0.1"),
        ("10.0.0.1", b"203.0.113.7, 10.0.0.2", "203.0.113.7", b"203.0.113.7, 10.0.0.2, 10.0.0.1"),
        # a spoofed left part does not win: the right-most untrusted address does
        ("10.0.0.1", b"1.2.3.4, 203.0.113.7", "203.0.113.7", b"1.2.3.4, 203.0.113.7, 10.0.0.1"),
        ("10.0.0.1", b"1.2.3.4,203.0.113.7", "203.0.113.7", b"1.2.3.4,203.0.113.7, 10.0.0.1"),
        (
            "10.0.0.1",
            b" 203.0.113.7 ,  10.0.0.2 ",
            "203.0.113.7",
            b" 203.0.113.7 ,  10.0.0.2 , 10.0.0.1",
        ),
        # every hop trusted: the left-most one is as far as we can see
        ("10.0.0.1", b"10.0.0.3, 10.0.0.2", "10.0.0.3", b"10.0.0.3, 10.0.0.2, 10.0.0.1"),
        # IPv6
        ("fd00::1", b"2001:db8::7", "2001:db8::7", b"2001:db8::7, fd00::1"),
        ("fd00::1", b"2001:db8::7, fd00::2", "2001:db8::7", b"2001:db8::7, fd00::2, fd00::1"),
        ("10.0.0.1", b"2001:db8::7, fd00::2", "2001:db8::7", b"2001:db8::7, fd00::2, 10.0.0.1"),
    ],
)
def test_a_trusted_peer_keeps_the_chain(peer, xff, client, chain):
    ex = forwarded(TRUSTED, peer, xff)
    assert ex.client_ip == client
    assert ex.forwarded_for == chain


@pytest.mark.parametrize(
    ("xfp", "xfh", "proto", "host"),
    [
        (b"https", b"public.example", b"https", b"public.example"),
        (None, None, b"http", b"gw.example.com"),
        (b"https", None, b"https", b"gw.example.com"),
        (None, b"public.example", b"http", b"public.example"),
    ],
)
def test_a_trusted_peer_keeps_proto_and_host(xfp, xfh, proto, host):
    ex = forwarded(TRUSTED, "10.0.0.1", b"203.0.113.7", xfp, xfh)
    assert (ex.forwarded_proto, ex.forwarded_host) == (proto, host)


@pytest.mark.parametrize(
    "xff",
    [
        b"garbage",
        b"203.0.113.7, garbage",
        b"203.0.113.7, , ",
        b"",
        b"<script>",
        b"1.2.3.4, 999.1.1.1",
    ],
)
def test_garbage_in_the_chain_never_becomes_the_client_ip(xff):
    # The hop the trusted proxy wrote is not an address: what lies left of it cannot be
    # believed either, so the client is the last address we could check: the peer.
    ex = forwarded(TRUSTED, "10.0.0.1", xff)
    ipaddress.ip_address(ex.client_ip)
    assert ex.client_ip == "10.0.0.1"


def test_garbage_behind_a_real_hop_is_left_of_the_client():
    ex = forwarded(TRUSTED, "10.0.0.1", b"garbage, 203.0.113.7")
    assert ex.client_ip == "203.0.113.7"
