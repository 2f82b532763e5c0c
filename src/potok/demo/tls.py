"""`potok demo --https`: a certificate for localhost from a throw-away local CA (trustme).

The CA exists only for this run (its files in a temporary folder removed on exit); the
banner prints `curl --cacert <its file>` so the demo is reached over verified HTTPS
without trusting anything system-wide.
"""

from __future__ import annotations

import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import trustme

from potok.config.models import GatewayConfig
from potok.config.paths import path_context

NAMES = ("localhost", "127.0.0.1", "::1")


@dataclass(frozen=True)
class DemoCertificates:
    directory: Path
    ca: Path
    cert: Path
    key: Path

    def remove(self) -> None:
        shutil.rmtree(self.directory, ignore_errors=True)


def make_demo_certificates() -> DemoCertificates:
    directory = Path(tempfile.mkdtemp(prefix="potok-demo-tls-"))
    ca = trustme.CA(organization_name="Potok demo (local, this run only)")
    leaf = ca.issue_cert(*NAMES)
    files = DemoCertificates(
        directory, directory / "ca.pem", directory / "cert.pem", directory / "key.pem"
    )
    ca.cert_pem.write_to_path(str(files.ca))
    files.cert.write_bytes(b"".join(blob.bytes() for blob in leaf.cert_chain_pems))
    leaf.private_key_pem.write_to_path(str(files.key))
    files.key.chmod(0o600)
    return files


def with_https(config: GatewayConfig, https_port: int, files: DemoCertificates) -> GatewayConfig:
    """`config` with two listeners: its plain host/port as before (the task service
    publishes its events there) and https on `https_port` with the demo certificate."""
    given: dict[str, Any] = config.model_dump(exclude_unset=True)
    server = dict(given.get("server", {}))
    host, port = config.server.host, config.server.port
    server.pop("host", None)
    server.pop("port", None)
    tls = {"certificates": [{"cert": str(files.cert), "key": str(files.key), "default": True}]}
    server["listeners"] = [
        {"host": host, "port": port},
        {"host": host, "port": https_port, "protocol": "https", "tls": tls},
    ]
    given["server"] = server
    return GatewayConfig.model_validate(given, context=path_context(None))
