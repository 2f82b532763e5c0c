"""The client side of bench/traffic.sh's aggregation rows: what a front end waits for.

    traffic_client.py PORT SECONDS CONNECTIONS PATH [PATH ...]

Each of CONNECTIONS keep-alive connections sends the PATHs one after the other, each
request once the previous answer is in (three paths: the three sequential calls a
front end makes without aggregation; one path: the aggregated route), over and over
for SECONDS. Prints one line of JSON: composite answers per second and their latency
percentiles (ms), each composite timed from its first request's write to its last
answer's end. Every answer must be a 200. uvloop and a hand-rolled HTTP/1.1 reader
(Content-Length framing, what nginx and Potok send here) keep the client cheap, and it
is the same client for both shapes, so its own cost is on both sides.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time

import uvloop


async def _connection(port: int, paths: list[bytes], until: float, latencies: list[float]) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    requests = [b"GET " + path + b" HTTP/1.1\r\nHost: bench\r\n\r\n" for path in paths]
    try:
        while time.perf_counter() < until:
            started = time.perf_counter()
            for request in requests:
                writer.write(request)
                head = await reader.readuntil(b"\r\n\r\n")
                if not head.startswith(b"HTTP/1.1 200"):
                    raise RuntimeError(f"not a 200: {head[:80]!r}")
                lower = head.lower()
                at = lower.index(b"content-length:") + 15
                length = int(lower[at : lower.index(b"\r\n", at)])
                await reader.readexactly(length)
            latencies.append(time.perf_counter() - started)
    finally:
        writer.close()


async def _main(port: int, seconds: float, connections: int, paths: list[bytes]) -> None:
    latencies: list[float] = []
    began = time.perf_counter()
    until = began + seconds
    await asyncio.gather(*(_connection(port, paths, until, latencies) for _ in range(connections)))
    elapsed = time.perf_counter() - began
    latencies.sort()

    def percentile(share: float) -> float:
        return round(1000 * latencies[min(len(latencies) - 1, int(share * len(latencies)))], 2)

    print(
        json.dumps(
            {
                "composites_per_s": round(len(latencies) / elapsed, 1),
                "requests_per_s": round(len(latencies) * len(paths) / elapsed, 1),
                "p50_ms": percentile(0.50),
                "p99_ms": percentile(0.99),
                "count": len(latencies),
            }
        )
    )


if __name__ == "__main__":
    port, seconds, connections = int(sys.argv[1]), float(sys.argv[2]), int(sys.argv[3])
    uvloop.run(_main(port, seconds, connections, [p.encode() for p in sys.argv[4:]]))
