"""The gRPC upstream of bench/grpc.sh: a grpc.aio server with one generic unary method,
/potok.bench.Raw/Echo, that returns the request bytes (no protoc, no serializers).

    python bench/grpc_server.py PORT
"""

from __future__ import annotations

import asyncio
import sys

import grpc


async def echo(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
    return request


async def serve(port: int) -> None:
    server = grpc.aio.server(options=[("grpc.max_concurrent_streams", 1000)])
    handlers = grpc.method_handlers_generic_handler(
        "potok.bench.Raw", {"Echo": grpc.unary_unary_rpc_method_handler(echo)}
    )
    server.add_generic_rpc_handlers((handlers,))
    server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    await server.wait_for_termination()


if __name__ == "__main__":
    asyncio.run(serve(int(sys.argv[1])))
