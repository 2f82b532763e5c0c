"""TLS listeners for tests: a throwaway PKI (trustme), certificate files, and clients that
speak `ssl` to the gateway's https listeners."""

from __future__ import annotations

import socket
import ssl
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import trustme

from tests.support.net import Response, ResponseReader, build_request, free_port


class Pki:
    """A CA and the files of certificates it issues, in `directory`."""

    def __init__(self, directory: Path, name: str = "ca") -> None:
        self.directory = directory
        self.ca = trustme.CA(organization_name=f"Potok tests {name}")
        self.ca_path = directory / f"{name}.pem"
        self.ca.cert_pem.write_to_path(str(self.ca_path))
        self._count = 0

    def issue(
        self, *names: str, common_name: str | None = None, stem: str | None = None
    ) -> tuple[str, str]:
        """(chain file, key file) of a new certificate for `names`."""
        self._count += 1
        stem = stem or f"cert{self._count}"
        cert = self.ca.issue_cert(*names, common_name=common_name)
        chain, key = self.directory / f"{stem}.pem", self.directory / f"{stem}.key"
        write_pair(cert, chain, key)
        return str(chain), str(key)

    def client_context(
        self,
        client: tuple[str, str] | None = None,
        alpn: tuple[str, ...] = ("http/1.1",),
        maximum: ssl.TLSVersion | None = None,
    ) -> ssl.SSLContext:
        """A client that trusts this CA, optionally presenting a client certificate."""
        context = ssl.create_default_context(cafile=str(self.ca_path))
        context.set_alpn_protocols(list(alpn))
        if client is not None:
            context.load_cert_chain(*client)
        if maximum is not None:
            context.maximum_version = maximum
        return context


def write_pair(cert: trustme.LeafCert, chain: Path, key: Path) -> None:
    """Write beside and rename, so a watcher never reads half a file."""
    for path, data in (
        (chain, b"".join(blob.bytes() for blob in cert.cert_chain_pems)),
        (key, cert.private_key_pem.bytes()),
    ):
        partial = path.with_suffix(path.suffix + ".partial")
        partial.write_bytes(data)
        partial.replace(path)


def https_listener(port: int, chain: str, key: str, **tls: Any) -> dict[str, Any]:
    return {
        "host": "127.0.0.1",
        "port": port,
        "protocol": "https",
        "tls": {"certificates": [{"cert": chain, "key": key}], **tls},
    }


def http_listener(port: int | None = None, **more: Any) -> dict[str, Any]:
    return {"host": "127.0.0.1", "port": port or free_port(), **more}


@contextmanager
def tls_connection(
    port: int,
    context: ssl.SSLContext,
    server_name: str | None = "gateway.test",
    session: ssl.SSLSession | None = None,
    timeout: float = 10.0,
) -> Iterator[ssl.SSLSocket]:
    raw = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    if server_name is None:
        context.check_hostname = False
    try:
        with context.wrap_socket(raw, server_hostname=server_name, session=session) as sock:
            yield sock
    finally:
        raw.close()


def https_request(
    port: int,
    context: ssl.SSLContext,
    method: str = "GET",
    path: str = "/",
    headers: dict[str, str] | None = None,
    server_name: str = "gateway.test",
    body: bytes = b"",
) -> Response:
    """One request on a new TLS connection (Host: the server name)."""
    with tls_connection(port, context, server_name) as sock:
        sock.sendall(build_request(method, path, {"Host": server_name, **(headers or {})}, body))
        return ResponseReader(sock).read(head_request=method == "HEAD")


def served_names(port: int, context: ssl.SSLContext, server_name: str | None) -> list[str]:
    """The DNS names of the certificate the listener serves for `server_name` (None: no
    SNI). Hostname checking off: the point is which certificate comes back."""
    context.check_hostname = False
    with tls_connection(port, context, server_name) as sock:
        cert = sock.getpeercert()
    return [value for kind, value in cert.get("subjectAltName", ()) if kind == "DNS"]
