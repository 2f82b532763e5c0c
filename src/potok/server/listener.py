"""Listening sockets: one gateway per port, its workers sharing it through SO_REUSEPORT.

The first socket claims the port with a plain bind (SO_REUSEADDR only, so connections
left in TIME_WAIT by a previous run do not block a restart): that fails if anything
else is bound there, including another gateway's SO_REUSEPORT sockets. Only then is
SO_REUSEPORT switched on, before listen(), so this gateway's other workers can join
the port and the kernel spreads new connections across them. Claim and opt-in happen
on one socket, so two gateways started at the same moment cannot both win.
"""

from __future__ import annotations

import errno
import socket
from pathlib import Path

import structlog

log = structlog.get_logger("potok.listener")

SOMAXCONN_PATH = Path("/proc/sys/net/core/somaxconn")


class PortInUse(Exception):
    """Something else is bound to the address: this gateway must not start."""

    def __init__(self, host: str, port: int) -> None:
        super().__init__(
            f"port {port} on {host} is already in use (another gateway or program is "
            f"listening there); stop it or choose another server.port"
        )
        self.host = host
        self.port = port


def kernel_backlog_cap() -> int | None:
    """net.core.somaxconn: the kernel silently caps every listen() backlog at it."""
    try:
        return int(SOMAXCONN_PATH.read_text().strip())
    except (OSError, ValueError):
        return None


def effective_backlog(requested: int) -> int:
    """The backlog the kernel will really give; a warning when it is less than asked."""
    cap = kernel_backlog_cap()
    if cap is not None and requested > cap:
        log.warning(
            "listen backlog capped by the kernel",
            configured=requested,
            effective=cap,
            hint="raise net.core.somaxconn to get the configured server.backlog",
        )
        return cap
    return requested


def listening_socket(host: str, port: int, backlog: int) -> socket.socket:
    """One listening socket, claiming the port (a single-process server)."""
    return _claim(host, port, backlog)


def listening_sockets(host: str, port: int, count: int, backlog: int) -> list[socket.socket]:
    """`count` listening sockets on one port: the first claims it, the rest join it."""
    first = _claim(host, port, backlog)
    sockets = [first]
    try:
        bound_port = int(first.getsockname()[1])  # port 0: the one the kernel picked
        for _ in range(count - 1):
            sockets.append(_join(host, bound_port, backlog))
    except BaseException:
        for sock in sockets:
            sock.close()
        raise
    return sockets


def _new_socket(host: str) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    return sock


def _claim(host: str, port: int, backlog: int) -> socket.socket:
    sock = _new_socket(host)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            raise PortInUse(host, port) from None
        raise
    if hasattr(socket, "SO_REUSEPORT"):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.listen(backlog)
    sock.setblocking(False)
    return sock


def _join(host: str, port: int, backlog: int) -> socket.socket:
    sock = _new_socket(host)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((host, port))
        sock.listen(backlog)
    except BaseException:
        sock.close()
        raise
    sock.setblocking(False)
    return sock
