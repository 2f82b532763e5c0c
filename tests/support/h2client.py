"""A small blocking HTTP/2 client over a real socket (the h2 library), for tests: normal
requests, multiplexing, flow control held back on purpose, and raw frames for attacks."""

from __future__ import annotations

import contextlib
import socket
import ssl
import time
from dataclasses import dataclass, field

import h2.config
import h2.connection
import h2.events
import h2.settings
from hyperframe.frame import Frame

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"


@dataclass
class StreamResult:
    status: int = 0
    headers: list[tuple[bytes, bytes]] = field(default_factory=list)
    body: bytearray = field(default_factory=bytearray)
    ended: bool = False
    reset: int | None = None  # the error code of an RST_STREAM from the server

    def header(self, name: bytes) -> bytes | None:
        return next((v for n, v in self.headers if n == name), None)

    @property
    def done(self) -> bool:
        return self.ended or self.reset is not None


class H2Client:
    """One HTTP/2 connection (h2c, or h2 over `tls`)."""

    def __init__(
        self,
        port: int,
        *,
        window: int | None = None,
        auto_ack: bool = True,
        tls: ssl.SSLContext | None = None,
        server_name: str = "localhost",
        timeout: float = 10.0,
    ) -> None:
        sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        if tls is not None:
            sock = tls.wrap_socket(sock, server_hostname=server_name)
        self.sock = sock
        # Headers go out as given (no validation, no lower-casing): tests send bad ones.
        config = h2.config.H2Configuration(
            client_side=True,
            header_encoding=None,
            validate_outbound_headers=False,
            normalize_outbound_headers=False,
        )
        self.conn = h2.connection.H2Connection(config)
        self.conn.initiate_connection()
        if window is not None:
            self.conn.update_settings({h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: window})
        self.auto_ack = auto_ack
        self.streams: dict[int, StreamResult] = {}
        self.goaway: h2.events.ConnectionTerminated | None = None
        self.closed = False
        self.flush()

    # Sending ------------------------------------------------------------------------

    def flush(self) -> None:
        data = self.conn.data_to_send()
        if data:
            self.sock.sendall(data)

    def request(
        self,
        path: str,
        method: str = "GET",
        headers: list[tuple[str, str]] | None = None,
        body: bytes | None = None,
        *,
        end: bool = True,
        authority: str = "localhost",
    ) -> int:
        stream_id = self.conn.get_next_available_stream_id()
        fields = [
            (b":method", method.encode()),
            (b":scheme", b"http"),
            (b":authority", authority.encode()),
            (b":path", path.encode()),
            *((n.encode(), v.encode()) for n, v in headers or []),
        ]
        self.conn.send_headers(stream_id, fields, end_stream=end and not body)
        self.streams[stream_id] = StreamResult()
        if body:
            self.send_body(stream_id, body, end=end)
        self.flush()
        return stream_id

    def send_body(self, stream_id: int, body: bytes, *, end: bool = True) -> None:
        """Send as the server's windows allow, reading its WINDOW_UPDATEs meanwhile."""
        view = memoryview(body)
        while view:
            window = self.conn.local_flow_control_window(stream_id)
            size = min(window, self.conn.max_outbound_frame_size, len(view))
            if size <= 0:
                self.flush()
                if not self.read_once():
                    raise ConnectionError("the server closed the connection")
                continue
            self.conn.send_data(stream_id, view[:size].tobytes())
            view = view[size:]
        if end:
            self.conn.end_stream(stream_id)
        self.flush()

    def send_raw(self, data: bytes) -> None:
        self.sock.sendall(data)

    def send_frames(self, *frames: Frame) -> None:
        self.sock.sendall(b"".join(f.serialize() for f in frames))

    # Receiving -------------------------------------------------------------------------

    def read_once(self, timeout: float | None = None) -> bool:
        """One read; False when the server closed the connection."""
        if timeout is not None:
            self.sock.settimeout(timeout)
        try:
            data = self.sock.recv(256 * 1024)
        except (ConnectionResetError, BrokenPipeError):
            data = b""
        if not data:
            self.closed = True
            return False
        for event in self.conn.receive_data(data):
            self._event(event)
        self.flush()
        return True

    def _event(self, event: h2.events.Event) -> None:
        if isinstance(event, h2.events.ResponseReceived):
            result = self.streams[event.stream_id]
            result.headers = list(event.headers)
            result.status = int(dict(event.headers)[b":status"])
        elif isinstance(event, h2.events.DataReceived):
            self.streams[event.stream_id].body += event.data
            if self.auto_ack:
                self.conn.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
        elif isinstance(event, h2.events.StreamEnded):
            self.streams[event.stream_id].ended = True
        elif isinstance(event, h2.events.StreamReset):
            if event.stream_id in self.streams:
                self.streams[event.stream_id].reset = event.error_code
        elif isinstance(event, h2.events.ConnectionTerminated):
            self.goaway = event
            if event.error_code == 0:
                # A graceful GOAWAY: the streams up to last_stream_id still finish (RFC 9113
                # 6.8), but h2 as a client closes its state machine at once; reopen it so
                # this client reads them, as curl and browsers do.
                self.conn.state_machine.state = h2.connection.ConnectionState.CLIENT_OPEN

    def wait(self, stream_id: int, timeout: float = 10.0) -> StreamResult:
        deadline = time.monotonic() + timeout
        result = self.streams[stream_id]
        while not result.done:
            if time.monotonic() > deadline:
                raise TimeoutError(f"stream {stream_id} not answered")
            if not self.read_once(timeout=max(0.01, deadline - time.monotonic())):
                raise ConnectionError(f"closed before stream {stream_id} ended")
        return result

    def wait_closed(self, timeout: float = 10.0) -> None:
        """Read until the server closes the connection (keeping what it said)."""
        deadline = time.monotonic() + timeout
        while not self.closed:
            if time.monotonic() > deadline:
                raise TimeoutError("the server kept the connection open")
            try:
                if not self.read_once(timeout=max(0.01, deadline - time.monotonic())):
                    return
            except h2.exceptions.ProtocolError:
                return  # frames after the GOAWAY: h2 refuses them, the point is made
            except TimeoutError:
                continue

    def get(self, path: str, timeout: float = 10.0, **kwargs: object) -> StreamResult:
        return self.wait(self.request(path, **kwargs), timeout)  # type: ignore[arg-type]

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.close()


def read_frames(
    sock: socket.socket, until_close: bool = True, timeout: float = 10.0
) -> list[Frame]:
    """Every frame the server sends until it closes (for raw attack clients)."""
    sock.settimeout(timeout)
    data = bytearray()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            chunk = sock.recv(65536)
        except (ConnectionResetError, TimeoutError):
            break
        if not chunk:
            break
        data += chunk
        if not until_close:
            break
    frames = []
    view = bytes(data)
    while len(view) >= 9:
        frame, length = Frame.parse_frame_header(memoryview(view[:9]))
        if len(view) < 9 + length:
            break
        frame.parse_body(memoryview(view[9 : 9 + length]))
        frames.append(frame)
        view = view[9 + length :]
    return frames
