"""Certificates of an https listener: chosen by SNI (exact, one-label wildcard, default),
replaced without a restart when the files change or on SIGHUP — new handshakes get the new
one, a connection already open is untouched — and a bad file at reload keeps the old."""

from __future__ import annotations

import signal
import time

import pytest

from tests.support.gateway import GatewayProcess, simple_config
from tests.support.net import ResponseReader, build_request, free_port
from tests.support.tls_listeners import Pki, served_names, tls_connection, write_pair


@pytest.fixture
def pki(tmp_path):
    return Pki(tmp_path)


def _listener(port, certificates, **tls):
    return {
        "host": "127.0.0.1",
        "port": port,
        "protocol": "https",
        "tls": {"certificates": certificates, **tls},
    }


def test_sni_exact_wildcard_and_default(pki, upstream):
    api = pki.issue("api.example.com")
    wild = pki.issue("*.example.com")
    other = pki.issue("shop.test", "www.shop.test")
    fallback = pki.issue("fallback.test")
    port = free_port()
    config = simple_config(upstream.url)
    config["server"] = {
        "listeners": [
            _listener(
                port,
                [
                    {"cert": wild[0], "key": wild[1]},
                    {"cert": api[0], "key": api[1]},
                    {"cert": other[0], "key": other[1]},
                    # `names` given: chosen for those, whatever the certificate says.
                    {"cert": fallback[0], "key": fallback[1], "default": True},
                ],
            )
        ]
    }
    gateway = GatewayProcess(config)
    try:
        context = pki.client_context()
        assert served_names(port, context, "api.example.com") == ["api.example.com"]  # exact
        assert served_names(port, context, "API.Example.COM") == ["api.example.com"]
        assert served_names(port, context, "www.example.com") == ["*.example.com"]  # wildcard
        assert served_names(port, context, "www.shop.test") == ["shop.test", "www.shop.test"]
        # A wildcard covers one label: deeper names and the bare domain get the default.
        assert served_names(port, context, "a.b.example.com") == ["fallback.test"]
        assert served_names(port, context, "example.com") == ["fallback.test"]
        assert served_names(port, context, "unknown.test") == ["fallback.test"]
        assert served_names(port, context, None) == ["fallback.test"]  # no SNI at all
        # Hostname verification passes end to end with the SNI-chosen certificate.
        with tls_connection(port, pki.client_context(), "api.example.com") as sock:
            sock.sendall(build_request("GET", "/x", {"Host": "api.example.com"}))
            assert ResponseReader(sock).read().status == 200
    finally:
        gateway.stop()


def test_without_a_default_the_first_certificate_serves_unknown_names(pki, upstream):
    first, second = pki.issue("one.test"), pki.issue("two.test")
    port = free_port()
    config = simple_config(upstream.url)
    config["server"] = {
        "listeners": [
            _listener(
                port,
                [{"cert": first[0], "key": first[1]}, {"cert": second[0], "key": second[1]}],
            )
        ]
    }
    gateway = GatewayProcess(config)
    try:
        assert served_names(port, pki.client_context(), "two.test") == ["two.test"]
        assert served_names(port, pki.client_context(), "nope.test") == ["one.test"]
    finally:
        gateway.stop()


def _reissue(pki, chain, key, *names):
    write_pair(pki.ca.issue_cert(*names), chain, key)


def _serial(port, pki, name="gateway.test"):
    context = pki.client_context()
    context.check_hostname = False
    with tls_connection(port, context, name) as sock:
        return sock.getpeercert()["serialNumber"]


@pytest.mark.parametrize("trigger", ["file change", "SIGHUP"])
def test_reload_new_handshakes_get_the_new_certificate_open_ones_are_untouched(
    pki, upstream, tmp_path, trigger
):
    chain, key = pki.issue("gateway.test", stem="live")
    port = free_port()
    config = simple_config(upstream.url)
    interval = "0.2s" if trigger == "file change" else 0
    config["server"] = {
        "listeners": [_listener(port, [{"cert": chain, "key": key}], reload_interval=interval)]
    }
    gateway = GatewayProcess(config)
    try:
        before = _serial(port, pki)
        with tls_connection(port, pki.client_context()) as kept:
            kept.sendall(build_request("GET", "/x"))
            reader = ResponseReader(kept)
            assert reader.read().status == 200
            old_serial = kept.getpeercert()["serialNumber"]
            _reissue(pki, tmp_path / "live.pem", tmp_path / "live.key", "gateway.test")
            if trigger == "SIGHUP":
                time.sleep(0.5)  # nothing happens by itself: reload_interval 0
                assert _serial(port, pki) == before
                gateway.signal(signal.SIGHUP)
            gateway.wait_for(lambda: _serial(port, pki) != before, timeout=10)
            # The connection opened before the reload still works, on its handshake's cert.
            kept.sendall(build_request("GET", "/y"))
            assert reader.read().status == 200
            assert kept.getpeercert()["serialNumber"] == old_serial == before
        assert "certificate reloaded" in gateway.stderr() + gateway.stdout_path.read_text()
    finally:
        gateway.stop()


def test_a_bad_file_at_reload_keeps_the_served_certificate(pki, upstream, tmp_path):
    chain, key = pki.issue("gateway.test", stem="live")
    port = free_port()
    config = simple_config(upstream.url)
    config["server"] = {
        "listeners": [_listener(port, [{"cert": chain, "key": key}], reload_interval="0.2s")]
    }
    gateway = GatewayProcess(config)
    try:
        before = _serial(port, pki)
        # A new certificate whose key does not match (the key file not yet replaced).
        stranger = pki.ca.issue_cert("gateway.test")
        (tmp_path / "live.pem").write_bytes(b"".join(b.bytes() for b in stranger.cert_chain_pems))

        def logged() -> bool:
            text = gateway.stdout_path.read_text() + gateway.stderr()
            return "certificate reload failed" in text

        gateway.wait_for(logged, timeout=10)
        assert _serial(port, pki) == before  # still served, handshakes still succeed
        text = gateway.stdout_path.read_text() + gateway.stderr()
        assert "live.pem" in text
        # Then the key arrives: the pair loads.
        (tmp_path / "live.key").write_bytes(stranger.private_key_pem.bytes())
        gateway.wait_for(lambda: _serial(port, pki) != before, timeout=10)
    finally:
        gateway.stop()
