"""Sockets for tests: free ports, raw HTTP over a real TCP connection."""

from __future__ import annotations

import socket
import time
from typing import Any


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for_port(port: int, timeout: float = 10.0, process: Any = None) -> None:
    """Until something accepts on the port; early if `process` (a Popen) exits first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            if process is not None and process.poll() is not None:
                raise TimeoutError(f"the process exited before listening on {port}") from None
            time.sleep(0.02)
    raise TimeoutError(f"nothing listening on {port}")


def connect(port: int, timeout: float = 10.0) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def recv_until_close(sock: socket.socket, limit: int = 64 * 1024 * 1024) -> bytes:
    chunks = []
    size = 0
    while size < limit:
        try:
            data = sock.recv(65536)
        except ConnectionResetError:
            break
        if not data:
            break
        chunks.append(data)
        size += len(data)
    return b"".join(chunks)


def send_raw(port: int, data: bytes, timeout: float = 10.0) -> bytes:
    """Send bytes and read everything until the gateway closes the connection."""
    with connect(port, timeout) as sock:
        sock.sendall(data)
        return recv_until_close(sock)


class Response:
    """One parsed HTTP/1.1 response (enough for tests; not a general client)."""

    def __init__(
        self, status: int, reason: str, headers: list[tuple[str, str]], body: bytes
    ) -> None:
        self.status = status
        self.reason = reason
        self.headers = headers
        self.body = body

    def header(self, name: str) -> str | None:
        for key, value in self.headers:
            if key.lower() == name.lower():
                return value
        return None

    def header_all(self, name: str) -> list[str]:
        return [v for k, v in self.headers if k.lower() == name.lower()]

    def json(self) -> object:
        import json

        return json.loads(self.body)

    def __repr__(self) -> str:
        return f"Response({self.status}, {self.headers}, {self.body[:200]!r})"


class ResponseReader:
    """Reads responses one after another from a socket (keep-alive, pipelining)."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buffer = b""

    def _fill(self) -> bool:
        data = self.sock.recv(65536)
        if not data:
            return False
        self.buffer += data
        return True

    def _line(self) -> bytes:
        while b"\r\n" not in self.buffer:
            if not self._fill():
                raise ConnectionError("closed while reading a line")
        line, self.buffer = self.buffer.split(b"\r\n", 1)
        return line

    def _exact(self, size: int) -> bytes:
        while len(self.buffer) < size:
            if not self._fill():
                raise ConnectionError(f"closed with {len(self.buffer)} of {size} bytes")
        data, self.buffer = self.buffer[:size], self.buffer[size:]
        return data

    def read(self, head_request: bool = False) -> Response:
        while True:
            status_line = self._line()
            _, code, *reason = status_line.decode().split(" ", 2)
            headers = []
            while line := self._line():
                name, value = line.decode("latin-1").split(":", 1)
                headers.append((name.strip(), value.strip()))
            status = int(code)
            if status >= 200 or status == 101:
                break
        response = Response(status, reason[0] if reason else "", headers, b"")
        if head_request or status in (204, 304, 101):
            return response
        length = response.header("content-length")
        if response.header("transfer-encoding") == "chunked":
            body = []
            while True:
                size = int(self._line().split(b";")[0], 16)
                if size == 0:
                    while self._line():
                        pass
                    break
                body.append(self._exact(size))
                self._exact(2)
            response.body = b"".join(body)
        elif length is not None:
            response.body = self._exact(int(length))
        else:
            while self._fill():
                pass
            response.body, self.buffer = self.buffer, b""
        return response


def request(
    port: int,
    method: str = "GET",
    path: str = "/",
    headers: dict[str, str] | None = None,
    body: bytes = b"",
    timeout: float = 10.0,
) -> Response:
    """One request on a fresh connection."""
    with connect(port, timeout) as sock:
        sock.sendall(build_request(method, path, headers, body))
        return ResponseReader(sock).read(head_request=method == "HEAD")


def build_request(
    method: str = "GET", path: str = "/", headers: dict[str, str] | None = None, body: bytes = b""
) -> bytes:
    all_headers = {"Host": "gateway.test"}
    if body:
        all_headers["Content-Length"] = str(len(body))
    all_headers.update(headers or {})
    head = f"{method} {path} HTTP/1.1\r\n" + "".join(
        f"{k}: {v}\r\n" for k, v in all_headers.items()
    )
    return head.encode("latin-1") + b"\r\n" + body
