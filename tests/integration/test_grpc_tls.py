"""gRPC over TLS on both sides: a grpcio client with TLS (ALPN h2) to the gateway's https
listener, and the gateway to a grpcio server over TLS (ALPN h2, verified against a
configured CA), or h2c to a plain one from the same listener."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from tests.support.gateway import GatewayProcess
from tests.support.grpc_upstream import GrpcServer, method
from tests.support.net import free_port
from tests.support.tls_listeners import Pki, https_listener, https_request

OPTIONS = [
    ("grpc.enable_http_proxy", 0),
    ("grpc.ssl_target_name_override", "localhost"),
]


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return Pki(tmp_path_factory.mktemp("grpc-pki"))


@pytest.fixture(scope="module")
def servers(pki: Pki) -> Iterator[tuple[GrpcServer, GrpcServer]]:
    chain, key = pki.issue("localhost", stem="upstream")
    credentials = grpc.ssl_server_credentials([(Path(key).read_bytes(), Path(chain).read_bytes())])
    secure, plain = GrpcServer(credentials), GrpcServer()
    yield secure, plain
    secure.stop()
    plain.stop()


@pytest.fixture(scope="module")
def gateway(pki: Pki, servers: tuple[GrpcServer, GrpcServer]) -> Iterator[GatewayProcess]:
    secure, plain = servers
    chain, key = pki.issue("localhost", stem="gateway")
    config = {
        "server": {"listeners": [https_listener(free_port(), chain, key)]},
        "services": {
            "secure": {
                "targets": [f"https://localhost:{secure.port}"],
                "tls": {"ca_file": str(pki.ca_path)},
            },
            "plain": {"targets": [plain.url]},
            # The system's CAs: the test CA is not among them.
            "untrusted": {"targets": [f"https://localhost:{secure.port}"]},
        },
        "routes": [
            {
                "name": "to-plain",
                "match": {"prefix": "/plain/potok.test.Raw"},
                "rewrite": "/potok.test.Raw",
                "service": "plain",
                "grpc": True,
            },
            {
                "name": "to-untrusted",
                "match": {"prefix": "/untrusted/potok.test.Raw"},
                "rewrite": "/potok.test.Raw",
                "service": "untrusted",
                "grpc": True,
            },
            {
                "name": "to-secure",
                "match": {"prefix": "/potok.test.Raw/"},
                "service": "secure",
                "grpc": True,
            },
        ],
    }
    process = GatewayProcess(config)
    yield process
    process.stop()


@pytest.fixture
def channel(pki: Pki, gateway: GatewayProcess) -> Iterator[grpc.Channel]:
    credentials = grpc.ssl_channel_credentials(root_certificates=pki.ca_path.read_bytes())
    with grpc.secure_channel(f"127.0.0.1:{gateway.port}", credentials, OPTIONS) as opened:
        yield opened


def test_tls_client_to_a_tls_upstream(channel, servers):
    answer, call = channel.unary_unary(method("Echo")).with_call(b"secret", timeout=10)
    assert answer == b"secret"
    assert ("x-echoed", "6") in call.trailing_metadata()
    replies = channel.unary_stream(method("Count"))(b"4", timeout=10)
    assert list(replies) == [b"0", b"1", b"2", b"3"]


def test_tls_client_to_an_h2c_upstream_with_a_rewritten_path(channel):
    answer = channel.unary_unary("/plain/potok.test.Raw/Echo")(b"plain", timeout=10)
    assert answer == b"plain"
    chat = channel.stream_stream("/plain/potok.test.Raw/Chat")(iter([b"a", b"b"]), timeout=10)
    assert list(chat) == [b"A", b"B"]


def test_errors_over_tls_keep_their_status(channel):
    with pytest.raises(grpc.RpcError) as caught:
        channel.unary_unary(method("Fail"))(b"it", timeout=10)
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND
    assert caught.value.details() == "no such thing: it"


def test_an_upstream_whose_certificate_is_not_trusted_is_unavailable(channel, gateway):
    with pytest.raises(grpc.RpcError) as caught:
        channel.unary_unary("/untrusted/potok.test.Raw/Echo")(b"", timeout=10)
    assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
    assert "certificate" in caught.value.details()


def test_new_upstream_connections_are_timed(pki, channel, gateway):
    channel.unary_unary(method("Echo"))(b"x", timeout=10)
    channel.unary_unary("/plain/potok.test.Raw/Echo")(b"x", timeout=10)
    context = pki.client_context()
    response = https_request(gateway.port, context, path="/api/v1/metrics", server_name="localhost")
    scrape = response.body.decode()
    assert 'upstream_connect_duration_seconds_count{phase="tcp_tls",service="secure"}' in scrape
    assert 'upstream_connect_duration_seconds_count{phase="tcp",service="plain"}' in scrape
