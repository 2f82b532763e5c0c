"""A real grpcio server for the gRPC route tests, with generic handlers on raw bytes (no
protoc): unary, server-, client- and bidirectional streaming, failures with trailing
metadata, slow calls that record their cancellation, and a call that answers with the
metadata it received."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from concurrent import futures

import grpc

SERVICE = "potok.test.Raw"
BIG = 64 * 1024  # bytes per message of /Big
BIG_COUNT = 64  # 4 MiB in all
DETAIL = b"\x08\x05\x12\x04gone"  # what a google.rpc.Status would be: opaque bytes here


def method(name: str) -> str:
    return f"/{SERVICE}/{name}"


class RawService:
    """Handlers that take and give bytes, and what the server saw."""

    def __init__(self) -> None:
        self.cancelled = threading.Event()
        self.calls = 0
        self.big_sent = 0
        self.lock = threading.Lock()

    def handlers(self) -> grpc.GenericRpcHandler:
        return grpc.method_handlers_generic_handler(
            SERVICE,
            {
                "Echo": grpc.unary_unary_rpc_method_handler(self.echo),
                "Limited": grpc.unary_unary_rpc_method_handler(self.echo),
                "Fail": grpc.unary_unary_rpc_method_handler(self.fail),
                "Metadata": grpc.unary_unary_rpc_method_handler(self.metadata),
                "Slow": grpc.unary_unary_rpc_method_handler(self.slow),
                "Count": grpc.unary_stream_rpc_method_handler(self.count),
                "Forever": grpc.unary_stream_rpc_method_handler(self.forever),
                "Big": grpc.unary_stream_rpc_method_handler(self.big),
                "Cut": grpc.unary_stream_rpc_method_handler(self.cut),
                "Sum": grpc.stream_unary_rpc_method_handler(self.sum),
                "Chat": grpc.stream_stream_rpc_method_handler(self.chat),
            },
        )

    def echo(self, request: bytes, context: grpc.ServicerContext) -> bytes:
        with self.lock:
            self.calls += 1
        context.set_trailing_metadata((("x-echoed", str(len(request))),))
        return request

    def fail(self, request: bytes, context: grpc.ServicerContext) -> bytes:
        context.set_trailing_metadata((("x-why", "because"), ("grpc-status-details-bin", DETAIL)))
        context.abort(grpc.StatusCode.NOT_FOUND, "no such thing: " + request.decode())
        raise AssertionError("abort raises")

    def metadata(self, request: bytes, context: grpc.ServicerContext) -> bytes:
        seen = {key: value for key, value in context.invocation_metadata()}
        seen["time_remaining"] = context.time_remaining()
        return json.dumps(seen, default=str).encode()

    def slow(self, request: bytes, context: grpc.ServicerContext) -> bytes:
        context.add_callback(self.cancelled.set)
        deadline = time.monotonic() + float(request or b"5")
        while time.monotonic() < deadline and context.is_active():
            time.sleep(0.01)
        return b"late"

    def count(self, request: bytes, context: grpc.ServicerContext) -> Iterator[bytes]:
        for index in range(int(request)):
            yield b"%d" % index
        context.set_trailing_metadata((("x-counted", request.decode()),))

    def big(self, request: bytes, context: grpc.ServicerContext) -> Iterator[bytes]:
        block = b"b" * BIG
        for _ in range(BIG_COUNT):
            yield block
            with self.lock:
                self.big_sent += 1

    def cut(self, request: bytes, context: grpc.ServicerContext) -> Iterator[bytes]:
        """Two messages, then the server cancels the call (grpcio: trailers, CANCELLED)."""
        yield b"one"
        yield b"two"
        time.sleep(0.1)
        context.cancel()
        time.sleep(0.1)

    def forever(self, request: bytes, context: grpc.ServicerContext) -> Iterator[bytes]:
        context.add_callback(self.cancelled.set)
        while context.is_active():
            yield b"tick"
            time.sleep(0.01)

    def sum(self, requests: Iterator[bytes], context: grpc.ServicerContext) -> bytes:
        return b"%d" % sum(len(message) for message in requests)

    def chat(self, requests: Iterator[bytes], context: grpc.ServicerContext) -> Iterator[bytes]:
        for message in requests:
            yield message.upper()


class GrpcServer:
    """A grpcio server on a loopback port (TLS with `credentials`)."""

    def __init__(self, credentials: grpc.ServerCredentials | None = None) -> None:
        self.service = RawService()
        self.server = grpc.server(
            futures.ThreadPoolExecutor(max_workers=16),
            options=[("grpc.max_receive_message_length", 16 * 1024 * 1024)],
        )
        self.server.add_generic_rpc_handlers((self.service.handlers(),))
        address = "127.0.0.1:0"
        self.port = (
            self.server.add_secure_port(address, credentials)
            if credentials is not None
            else self.server.add_insecure_port(address)
        )
        self.server.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def stop(self) -> None:
        self.server.stop(None).wait(5)
