"""Pebble, Let's Encrypt's ACME test server, and pebble-challtestsrv as its DNS server,
started as subprocesses on free ports.

Pebble validates HTTP-01 for real: it resolves the name through the challtestsrv
(every A query answers 127.0.0.1, no AAAA) and fetches
http://<name>:<http_port>/.well-known/acme-challenge/<token>, so `http_port` must be
the gateway's port. Its own HTTPS uses a certificate from a CA made here (trustme):
`ca_bundle` is what an ACME client verifies Pebble with. Pebble's issuing root is new
on every start; `roots()` fetches it from the management interface.
"""

from __future__ import annotations

import json
import os
import ssl
import subprocess
import tempfile
import urllib.request
from pathlib import Path
from typing import Any

import trustme

from tests.support.net import free_port, wait_for_port


class Pebble:
    def __init__(
        self, http_port: int, validity: int | None = None, listen_port: int | None = None
    ) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="potok-pebble-"))
        self.http_port = http_port
        self.port = listen_port or free_port()
        self.management_port = free_port()
        self.dns_port = free_port()
        ca = trustme.CA()
        server = ca.issue_cert("localhost", "127.0.0.1")
        self.ca_bundle = str(self.dir / "ca.pem")
        ca.cert_pem.write_to_path(self.ca_bundle)
        server.cert_chain_pems[0].write_to_path(str(self.dir / "cert.pem"))
        server.private_key_pem.write_to_path(str(self.dir / "key.pem"))
        settings: dict[str, Any] = {
            "listenAddress": f"127.0.0.1:{self.port}",
            "managementListenAddress": f"127.0.0.1:{self.management_port}",
            "certificate": str(self.dir / "cert.pem"),
            "privateKey": str(self.dir / "key.pem"),
            "httpPort": http_port,
            "tlsPort": free_port(),
            "ocspResponderURL": "",
            "externalAccountBindingRequired": False,
        }
        if validity is not None:
            settings["certificateValidityPeriod"] = validity
        (self.dir / "pebble.json").write_text(json.dumps({"pebble": settings}))
        self._dns = self._spawn(
            "challtestsrv",
            [
                "pebble-challtestsrv",
                "-defaultIPv4", "127.0.0.1",
                "-defaultIPv6", "",
                "-dns01", f"127.0.0.1:{self.dns_port}",
                "-http01", "",
                "-https01", "",
                "-tlsalpn01", "",
                "-management", f"127.0.0.1:{free_port()}",
            ],
        )  # fmt: skip
        self._pebble: subprocess.Popen[bytes] | None = None
        self.start()

    def _spawn(self, name: str, command: list[str]) -> subprocess.Popen[bytes]:
        env = {
            **os.environ,
            "PEBBLE_VA_NOSLEEP": "1",  # validate at once, not after a random 0-15 s
            "PEBBLE_WFE_NONCEREJECT": "0",  # no random badNonce: tests stay deterministic
            "PEBBLE_AUTHZREUSE": "0",  # every order is validated against the gateway
        }
        log = open(self.dir / f"{name}.log", "ab")  # noqa: SIM115 - closed with the process
        return subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env)

    def start(self) -> None:
        """(Re)start Pebble itself (its state, roots included, start afresh)."""
        self._pebble = self._spawn(
            "pebble",
            ["pebble", "-config", str(self.dir / "pebble.json"), "-dnsserver",
             f"127.0.0.1:{self.dns_port}"],
        )  # fmt: skip
        wait_for_port(self.port, timeout=20)
        wait_for_port(self.management_port, timeout=20)

    @property
    def directory_url(self) -> str:
        return f"https://127.0.0.1:{self.port}/dir"

    def _management(self, path: str) -> bytes:
        context = ssl.create_default_context(cafile=self.ca_bundle)
        url = f"https://127.0.0.1:{self.management_port}{path}"
        with urllib.request.urlopen(url, context=context, timeout=10) as response:
            body: bytes = response.read()
            return body

    def roots(self) -> bytes:
        """The root that issues this Pebble's certificates (PEM)."""
        return self._management("/roots/0")

    def status(self, serial: str) -> dict[str, Any]:
        """Pebble's view of a certificate: {"Status": "Valid"|"Revoked", ...}."""
        result: dict[str, Any] = json.loads(self._management(f"/cert-status-by-serial/{serial}"))
        return result

    def log(self) -> str:
        return (self.dir / "pebble.log").read_text(errors="replace")

    def stop_pebble(self) -> None:
        if self._pebble is not None and self._pebble.poll() is None:
            self._pebble.terminate()
            self._pebble.wait(10)

    def stop(self) -> None:
        self.stop_pebble()
        if self._dns.poll() is None:
            self._dns.terminate()
            self._dns.wait(10)
