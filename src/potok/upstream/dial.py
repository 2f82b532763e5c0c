"""Opening a new connection to a target: TCP, then TLS for an https:// target.

The two phases are separate steps (`create_connection`, then `start_tls`) so each is
timed on its own and a failure says which one failed: a TCP connect that times out is
the gateway-timeout it always was, while a TLS handshake that fails (bad certificate,
wrong name, a peer that does not speak TLS, no answer in time) is a bad gateway with
the verification error in it. One `connect` timeout covers both phases together.
"""

from __future__ import annotations

import asyncio
import ssl
import time
from collections.abc import Callable

from potok.upstream.connection import UpstreamConnection
from potok.upstream.target import Target

ConnectTimer = Callable[[str, float], None]
"""Told (phase, seconds) of each phase that succeeded: "tcp", "tls"."""

# OpenSSL X509_V_ERR_* codes an operator meets, as the short reason in metrics and logs.
_VERIFY_REASONS = {
    10: "expired",  # CERT_HAS_EXPIRED
    9: "not_yet_valid",  # CERT_NOT_YET_VALID
    62: "hostname_mismatch",  # HOSTNAME_MISMATCH
    64: "hostname_mismatch",  # IP_ADDRESS_MISMATCH
    2: "unknown_ca",  # UNABLE_TO_GET_ISSUER_CERT
    18: "unknown_ca",  # DEPTH_ZERO_SELF_SIGNED_CERT
    19: "unknown_ca",  # SELF_SIGNED_CERT_IN_CHAIN
    20: "unknown_ca",  # UNABLE_TO_GET_ISSUER_CERT_LOCALLY
    21: "unknown_ca",  # UNABLE_TO_VERIFY_LEAF_SIGNATURE
}
TLS_FAILURE_REASONS = (
    "expired",
    "not_yet_valid",
    "hostname_mismatch",
    "unknown_ca",
    "verify",
    "timeout",
    "handshake",
)


class TlsFailure(Exception):
    """The TLS handshake with a target failed; `reason` is one of TLS_FAILURE_REASONS,
    `detail` what OpenSSL said (e.g. "certificate has expired")."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


def classify(exc: BaseException, timeout: float) -> TlsFailure:
    """What a failed handshake means, for the log line, the 502 and the metric."""
    if isinstance(exc, ssl.SSLCertVerificationError):
        detail = exc.verify_message or exc.reason or str(exc)
        return TlsFailure(_VERIFY_REASONS.get(exc.verify_code, "verify"), detail)
    if isinstance(exc, TimeoutError) or (
        isinstance(exc, ConnectionAbortedError) and "handshake is taking longer" in str(exc)
    ):
        return TlsFailure("timeout", f"no TLS handshake within {timeout:g}s")
    if isinstance(exc, ssl.SSLError):
        # e.g. TLSV13_ALERT_CERTIFICATE_REQUIRED (the target wants a client certificate),
        # WRONG_VERSION_NUMBER (it speaks plain HTTP), UNSUPPORTED_PROTOCOL (TLS < 1.2).
        return TlsFailure("handshake", exc.reason or str(exc))
    if isinstance(exc, OSError):
        if str(exc):
            return TlsFailure("handshake", f"connection lost during the handshake: {exc}")
        # OpenSSL does not tell why the peer hung up; these are the usual reasons.
        return TlsFailure(
            "handshake",
            f"the target closed the connection during the handshake ({type(exc).__name__}): "
            "it may refuse the TLS versions offered (min_version), want a client "
            "certificate, or not speak TLS on this port",
        )
    return TlsFailure("handshake", str(exc))


async def dial(
    target: Target, connect_timeout: float, timer: ConnectTimer | None
) -> UpstreamConnection:
    """A connected (and, for https://, verified) connection to `target`.

    Raises TimeoutError or OSError from the TCP phase, TlsFailure from the TLS one.
    """
    loop = asyncio.get_running_loop()
    started = time.perf_counter()
    async with asyncio.timeout(connect_timeout):
        transport, connection = await loop.create_connection(
            lambda: UpstreamConnection(target), target.host, target.port
        )
    connected = time.perf_counter()
    if timer is not None:
        timer("tcp", connected - started)
    tls = target.tls
    if tls is None:
        return connection
    remaining = connect_timeout - (connected - started)
    try:
        if remaining <= 0:
            raise TimeoutError
        # The handshake timeout is the loop's own; the outer one only guards against a
        # handshake that neither finishes nor times out (it should never fire).
        async with asyncio.timeout(remaining + 1.0):
            secure = await loop.start_tls(
                transport,
                connection,
                tls.context,
                server_hostname=target.server_hostname,
                ssl_handshake_timeout=remaining,
            )
    except (OSError, TimeoutError) as exc:  # ssl.SSLError is an OSError
        transport.abort()
        raise classify(exc, connect_timeout) from exc
    if secure is None:  # the peer closed during the handshake
        transport.abort()
        raise TlsFailure("handshake", "the target closed the connection during the handshake")
    connection.transport = secure
    if timer is not None:
        timer("tls", time.perf_counter() - connected)
    return connection
