"""Every Redis connection's settings come from the one `redis:` section (potok.redis_clients)."""

from __future__ import annotations

import ssl

import pytest
from pydantic import ValidationError

from potok.config.loader import load_config_text
from potok.config.redis import RedisConfig, RedisTlsConfig
from potok.identity.revocation import Denylist, Revocations
from potok.realtime.bus import build_bus
from potok.redis_clients import endpoint_from_url, redis_client, redis_endpoint


def test_urls_of_every_scheme_are_parsed_once_for_the_resp_connection():
    tcp = endpoint_from_url("redis://user:p%40ss@10.0.0.5:6380/3", connect_timeout=0.5)
    assert (tcp.host, tcp.port, tcp.db, tcp.username, tcp.password) == (
        "10.0.0.5",
        6380,
        3,
        "user",
        "p@ss",
    )
    assert tcp.tls is None and tcp.path is None and tcp.connect_timeout == 0.5
    unix = endpoint_from_url("unix://:s3cret@/run/redis.sock?db=4")
    assert (unix.path, unix.db, unix.password, unix.username) == (
        "/run/redis.sock",
        4,
        "s3cret",
        None,
    )
    tls = endpoint_from_url("rediss://cache.example.com")
    assert isinstance(tls.tls, ssl.SSLContext)
    assert tls.tls.check_hostname and tls.tls.verify_mode == ssl.CERT_REQUIRED
    assert (tls.host, tls.port, tls.db) == ("cache.example.com", 6379, 0)


def test_an_override_url_keeps_the_sections_other_settings():
    section = RedisConfig(url="redis://10.0.0.5:6379/0", connect_timeout=0.3, max_connections=5)
    endpoint = redis_endpoint(section, "redis://10.0.0.9:6390/1")
    assert (endpoint.host, endpoint.port, endpoint.db, endpoint.connect_timeout) == (
        "10.0.0.9",
        6390,
        1,
        0.3,
    )
    assert redis_endpoint(None).connect_timeout == RedisConfig().connect_timeout
    client = redis_client(section, "redis://10.0.0.9:6390/1")
    options = client.connection_pool.connection_kwargs
    assert options["host"] == "10.0.0.9" and options["socket_connect_timeout"] == 0.3
    assert options["health_check_interval"] == section.health_check_interval
    assert client.connection_pool.max_connections == 5


def test_tls_files_reach_both_kinds_of_client(tmp_path):
    with pytest.raises(ValidationError, match="together"):
        RedisTlsConfig(cert_file=str(tmp_path / "c.pem"))
    ca = tmp_path / "ca.pem"
    ca.write_text(_self_signed_pem())
    section = RedisConfig(url="rediss://cache.example.com/0", tls=RedisTlsConfig(ca_file=str(ca)))
    options = redis_client(section).connection_pool.connection_kwargs
    assert options["ssl_ca_certs"] == str(ca) and options["ssl_cert_reqs"] == "required"
    context = redis_endpoint(section).tls
    assert context is not None
    assert any(c.get("subject") for c in context.get_ca_certs())  # the private CA is trusted


def test_revocation_events_and_the_bus_take_the_sections_settings():
    config = load_config_text(
        "redis: {url: 'redis://10.0.0.5:6380/2', connect_timeout: 0.4, max_connections: 3}\n"
        "auth: {revocation: {backend: redis, redis_url: 'redis://10.0.0.9/0'}}\n"
        "realtime:\n"
        "  auth: {token_service: false, issuers: [{issuer: i, jwks: {url: 'https://i/jwks'}}]}\n"
        "  bus: {backend: redis, redis: {url: 'redis://10.0.0.7/1'}}\n",
        {},
    )
    revocations = Revocations(config.auth.revocation, None, Denylist(), config.redis)
    assert revocations.redis_url == "redis://10.0.0.9/0"
    assert config.realtime is not None
    bus = build_bus(config.realtime, config)
    options = bus._client.connection_pool.connection_kwargs  # type: ignore[attr-defined]
    assert (options["host"], options["db"], options["socket_connect_timeout"]) == (
        "10.0.0.7",
        1,
        0.4,
    )
    assert bus._client.connection_pool.max_connections == 3  # type: ignore[attr-defined]


def _self_signed_pem() -> str:
    """A CA certificate in PEM (made on the fly: no key material kept in the repository)."""
    import datetime

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "potok test CA")])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    return certificate.public_bytes(serialization.Encoding.PEM).decode()
