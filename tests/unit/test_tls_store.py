"""The TLS pieces without a gateway: names, the SNI store (its `install` API for
certificates obtained at run time), listener config checks, the https redirect target."""

from __future__ import annotations

import asyncio
import ssl

import pytest
import trustme
from pydantic import ValidationError

from potok.config.listeners import ListenerConfig
from potok.config.models import GatewayConfig
from potok.routing.https_redirect import https_location
from potok.tls.config import ListenerTlsConfig
from potok.tls.context import CertificateError, TlsSettings
from potok.tls.names import check_name
from potok.tls.session import client_certificate
from potok.tls.store import CertificateStore


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


def _pems(leaf: trustme.LeafCert) -> tuple[bytes, bytes]:
    return b"".join(b.bytes() for b in leaf.cert_chain_pems), leaf.private_key_pem.bytes()


def _settings(**tls: object) -> TlsSettings:
    config = ListenerTlsConfig.model_validate(
        {"certificates": [{"cert": "/x.pem", "key": "/x.key"}], **tls}
    )
    return TlsSettings.from_config(config)


@pytest.mark.parametrize(
    ("name", "good"),
    [
        ("api.example.com", True),
        ("API.Example.COM.", True),
        ("localhost", True),
        ("*.example.com", True),
        ("*.com", False),
        ("a.*.example.com", False),
        ("*.*.example.com", False),
        ("-bad.example.com", False),
        ("", False),
    ],
)
def test_names(name: str, good: bool) -> None:
    if good:
        assert check_name(name) == name.lower().rstrip(".")
    else:
        with pytest.raises(CertificateError):
            check_name(name)


def test_install_lookup_and_replace(ca: trustme.CA) -> None:
    store = CertificateStore(_settings())
    assert store.empty and store.lookup("a.example.com") is None
    store.install(["a.example.com"], *_pems(ca.issue_cert("a.example.com")))
    store.install(["*.example.com"], *_pems(ca.issue_cert("*.example.com")))
    exact, wild = store.lookup("a.example.com"), store.lookup("b.example.com")
    assert exact is not None and wild is not None and exact is not wild
    assert store.lookup("A.EXAMPLE.COM") is exact
    # No default given: the first installed one serves unknown names and no SNI.
    assert store.lookup("x.y.example.com") is exact and store.lookup(None) is exact
    store.install(["z.test"], *_pems(ca.issue_cert("z.test")), default=True)
    assert store.lookup(None) is store.lookup("z.test")
    # Installing for the same names replaces.
    store.install(["a.example.com"], *_pems(ca.issue_cert("a.example.com")))
    assert store.lookup("a.example.com") is not exact


def test_install_refuses_a_mismatched_pair(ca: trustme.CA) -> None:
    store = CertificateStore(_settings())
    chain, _ = _pems(ca.issue_cert("a.test"))
    _, other_key = _pems(ca.issue_cert("b.test"))
    with pytest.raises(CertificateError, match="installed certificate"):
        store.install(["a.test"], chain, other_key)
    with pytest.raises(CertificateError):
        store.install([], chain, other_key)
    assert store.empty


async def test_installed_certificate_is_served_by_sni(ca: trustme.CA) -> None:
    store = CertificateStore(_settings())
    store.install(["api.test"], *_pems(ca.issue_cert("api.test")))

    class Hello(asyncio.Protocol):
        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            transport.write(b"hi")  # type: ignore[attr-defined]

    server = await asyncio.get_running_loop().create_server(Hello, "127.0.0.1", 0, ssl=store.front)
    port = server.sockets[0].getsockname()[1]
    client = ssl.create_default_context()
    ca.configure_trust(client)
    reader, writer = await asyncio.open_connection(
        "127.0.0.1", port, ssl=client, server_hostname="api.test"
    )
    assert await reader.readexactly(2) == b"hi"
    writer.close()
    server.close()


def test_tls_settings() -> None:
    settings = _settings(min_version="1.3", session_tickets=False, alpn=["h2", "http/1.1"])
    assert settings.minimum_version == ssl.TLSVersion.TLSv1_3
    assert settings.alpn == ("h2", "http/1.1") and not settings.session_tickets
    with pytest.raises(ValidationError, match="client_ca"):
        ListenerTlsConfig.model_validate(
            {"certificates": [{"cert": "a", "key": "b"}], "client_auth": "required"}
        )
    with pytest.raises(ValidationError, match="alpn"):
        ListenerTlsConfig.model_validate(
            {"certificates": [{"cert": "a", "key": "b"}], "alpn": ["spdy/3"]}
        )


def test_listener_checks() -> None:
    with pytest.raises(ValidationError, match="needs `tls`"):
        ListenerConfig(port=443, protocol="https")
    with pytest.raises(ValidationError, match="for https listeners"):
        ListenerConfig.model_validate(
            {"port": 80, "tls": {"certificates": [{"cert": "a", "key": "b"}]}}
        )
    with pytest.raises(ValidationError, match="redirect_port needs"):
        ListenerConfig(port=80, redirect_port=8443)


def test_shorthand_and_metrics_listen_become_listeners() -> None:
    plain = GatewayConfig.model_validate({"server": {"port": 9000}})
    (only,) = plain.listeners()
    assert only.port == 9000 and set(only.serves) == {"proxy", "api", "metrics"}
    split = GatewayConfig.model_validate(
        {"server": {"port": 9000}, "metrics": {"listen": "127.0.0.1:9100"}}
    )
    main, metrics = split.listeners()
    assert set(main.serves) == {"proxy", "api"} and metrics.serves == ("metrics",)
    with pytest.raises(ValidationError, match=r"a server\.listeners port"):
        GatewayConfig.model_validate(
            {"server": {"listeners": [{"port": 9100}]}, "metrics": {"listen": "127.0.0.1:9100"}}
        )


@pytest.mark.parametrize(
    ("host", "port", "target", "location"),
    [
        (b"shop.test", 443, b"/a?b=1", b"https://shop.test/a?b=1"),
        (b"shop.test:8080", 8443, b"/", b"https://shop.test:8443/"),
        (b"[::1]:80", 443, b"/x", b"https://[::1]/x"),
        (b"10.0.0.1", 8443, b"/x", b"https://10.0.0.1:8443/x"),
    ],
)
def test_https_location(host: bytes, port: int, target: bytes, location: bytes) -> None:
    assert https_location(host, port, target) == location


def test_client_certificate_from_getpeercert() -> None:
    assert client_certificate({}) is None and client_certificate(None) is None
    peer = {
        "subject": ((("organizationName", "Acme"),), (("commonName", "billing"),)),
        "issuer": ((("commonName", "Clients CA"),),),
        "subjectAltName": (("DNS", "billing.internal"), ("URI", "spiffe://acme/billing")),
        "serialNumber": "0A",
    }
    certificate = client_certificate(peer)
    assert certificate is not None and certificate.subject == "billing"
    assert certificate.issuer == "Clients CA" and certificate.uris == ("spiffe://acme/billing",)
    no_cn = client_certificate({**peer, "subject": ()})
    assert no_cn is not None and no_cn.subject == "billing.internal"
