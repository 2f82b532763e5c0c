"""One real grpcio call to /potok.bench.Raw/Echo on 127.0.0.1:PORT: exits 0 if it is OK
and the answer is the request (bench/grpc.sh checks both paths before measuring).

    python bench/grpc_check.py PORT
"""

from __future__ import annotations

import sys

import grpc


def main(port: int) -> int:
    options = [("grpc.enable_http_proxy", 0)]
    with grpc.insecure_channel(f"127.0.0.1:{port}", options=options) as channel:
        echo = channel.unary_unary("/potok.bench.Raw/Echo")
        try:
            answer = echo(b"potok", timeout=5)
        except grpc.RpcError as error:
            print(f"127.0.0.1:{port}: {error.code()} {error.details()}", file=sys.stderr)
            return 1
    return 0 if answer == b"potok" else 1


if __name__ == "__main__":
    sys.exit(main(int(sys.argv[1])))
