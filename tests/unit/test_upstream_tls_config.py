"""The `tls` block of a service and its https:// targets: the context built at load, the
errors that name the field, what makes two configs equal (a reload keeps or rebuilds the
service), and the name a target's certificate is checked against."""

from __future__ import annotations

import ssl
from pathlib import Path
from typing import Any

import pytest
import trustme
import yaml
from cryptography.hazmat.primitives import serialization

from potok.config.loader import ConfigError, load_config_text
from potok.config.models import GatewayConfig
from potok.upstream.dial import classify
from potok.upstream.pool import ConnectionPool
from potok.upstream.target import Target


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture
def files(tmp_path: Path, ca: trustme.CA) -> dict[str, str]:
    client = ca.issue_cert("gateway.test")
    paths = {
        "ca_file": tmp_path / "ca.pem",
        "cert_file": tmp_path / "client.pem",
        "key_file": tmp_path / "client.key",
    }
    ca.cert_pem.write_to_path(str(paths["ca_file"]))
    client.cert_chain_pems[0].write_to_path(str(paths["cert_file"]))
    client.private_key_pem.write_to_path(str(paths["key_file"]))
    return {name: str(path) for name, path in paths.items()}


def load(service: dict[str, Any]) -> GatewayConfig:
    return load_config_text(yaml.safe_dump({"services": {"svc": service}}), env={})


def problems(service: dict[str, Any]) -> list[tuple[str, str]]:
    with pytest.raises(ConfigError) as info:
        load(service)
    return info.value.problems


def test_an_https_target_without_tls_is_verified_against_the_system_cas():
    config = load({"targets": ["https://svc.internal"]}).services["svc"]
    tls = config.tls_context
    assert tls is not None and tls.verifies and tls.server_name is None
    context = tls.context
    assert context.verify_mode == ssl.CERT_REQUIRED and context.check_hostname
    assert context.minimum_version == ssl.TLSVersion.TLSv1_2
    assert context.cert_store_stats()["x509_ca"] > 0  # the system's CAs


def test_only_http_targets_have_no_tls_context():
    assert load({"targets": ["http://svc.internal"]}).services["svc"].tls_context is None


def test_a_ca_file_replaces_the_system_cas(files):
    tls = (
        load({"targets": ["https://a:1"], "tls": {"ca_file": files["ca_file"]}})
        .services["svc"]
        .tls_context
    )
    assert tls is not None
    assert tls.context.cert_store_stats()["x509_ca"] == 1


def test_min_version_1_3(files):
    tls = (
        load({"targets": ["https://a:1"], "tls": {"min_version": "1.3"}})
        .services["svc"]
        .tls_context
    )
    assert tls is not None and tls.context.minimum_version == ssl.TLSVersion.TLSv1_3


def test_insecure_skip_verify_turns_checks_off():
    tls = (
        load({"targets": ["https://a:1"], "tls": {"insecure_skip_verify": True}})
        .services["svc"]
        .tls_context
    )
    assert tls is not None and not tls.verifies
    assert tls.context.verify_mode == ssl.CERT_NONE and not tls.context.check_hostname


@pytest.mark.parametrize(
    ("tls", "fragment"),
    [
        ({"ca_file": "/nonexistent/ca.pem"}, "ca_file: cannot read '/nonexistent/ca.pem'"),
        ({"cert_file": "CERT"}, "give 'cert_file' and 'key_file' together"),
        ({"ca_file": "CA", "insecure_skip_verify": True}, "'ca_file' has no effect"),
        ({"server_name": "10.0.0.1"}, "an IP address is never sent in SNI"),
        ({"server_name": "a b"}, "is not a host name"),
        ({"min_version": "1.1"}, "'1.2' or '1.3'"),
    ],
)
def test_bad_tls_settings_name_the_field(files, tls, fragment):
    tls = {k: files["ca_file"] if v == "CA" else files["cert_file"] if v == "CERT" else v
           for k, v in tls.items()}  # fmt: skip
    found = problems({"targets": ["https://a:1"], "tls": tls})
    assert len(found) == 1, found
    path, message = found[0]
    assert path.startswith("services.svc.tls"), found
    assert fragment in message, found


def test_a_ca_file_that_is_not_pem_is_refused(tmp_path):
    bad = tmp_path / "ca.pem"
    bad.write_text("not a certificate\n")
    [(path, message)] = problems({"targets": ["https://a:1"], "tls": {"ca_file": str(bad)}})
    assert path == "services.svc.tls"
    assert "ca_file:" in message and "holds no usable PEM CA" in message


def test_a_key_that_does_not_match_the_certificate_is_refused(files, ca):
    other = ca.issue_cert("other.test")
    other_key = Path(files["key_file"]).with_name("other.key")
    other.private_key_pem.write_to_path(str(other_key))
    tls = {"cert_file": files["cert_file"], "key_file": str(other_key)}
    [(_, message)] = problems({"targets": ["https://a:1"], "tls": tls})
    assert "not a usable certificate and matching key" in message


def test_an_encrypted_key_is_refused_not_prompted_for(files):
    key = serialization.load_pem_private_key(Path(files["key_file"]).read_bytes(), None)
    encrypted = Path(files["key_file"]).with_name("encrypted.key")
    encrypted.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(b"secret"),
        )
    )
    tls = {"cert_file": files["cert_file"], "key_file": str(encrypted)}
    [(_, message)] = problems({"targets": ["https://a:1"], "tls": tls})
    assert "is encrypted" in message


def test_tls_without_an_https_target_is_refused():
    [(path, message)] = problems({"targets": ["http://a:1"], "tls": {"min_version": "1.3"}})
    assert path == "services.svc"
    assert "no target is https://" in message


def test_configs_are_equal_while_the_files_are_the_same(files, ca):
    service = {"targets": ["https://a:1"], "tls": {"ca_file": files["ca_file"]}}
    assert load(service).services["svc"] == load(service).services["svc"]
    before = load(service).services["svc"]
    trustme.CA().cert_pem.write_to_path(files["ca_file"])  # the bundle is replaced
    # A reload now builds a new service (and context) instead of keeping the running one.
    assert load(service).services["svc"] != before


def test_an_https_target_defaults_to_port_443_and_checks_its_host_name():
    config = load({"targets": ["https://Orders.Internal", "http://b"]}).services["svc"]
    tls = config.tls_context
    secure = Target(config.targets[0].url, 1, ConnectionPool(1, 1), tls)
    assert (secure.port, secure.host_header, secure.server_hostname) == (
        443,
        b"orders.internal",
        "orders.internal",
    )
    assert secure.tls is tls
    plain = Target(config.targets[1].url, 1, ConnectionPool(1, 1), tls)
    assert plain.tls is None and plain.port == 80


def test_server_name_is_checked_for_every_target():
    config = load({"targets": ["https://10.0.0.1:8443"], "tls": {"server_name": "orders.internal"}})
    tls = config.services["svc"].tls_context
    target = Target("https://10.0.0.1:8443", 1, ConnectionPool(1, 1), tls)
    assert target.server_hostname == "orders.internal"
    assert target.host_header == b"10.0.0.1:8443"


def test_failures_are_classified():
    timeout = classify(TimeoutError(), 2.0)
    assert (timeout.reason, timeout.detail) == ("timeout", "no TLS handshake within 2s")
    aborted = ConnectionAbortedError("SSL handshake is taking longer than 2 seconds: aborting")
    assert classify(aborted, 2.0).reason == "timeout"
    reset = classify(ConnectionResetError("reset by peer"), 2.0)
    assert reset.reason == "handshake" and "reset by peer" in reset.detail
    silent = classify(ConnectionResetError(), 2.0)
    assert "closed the connection during the handshake (ConnectionResetError)" in silent.detail
