"""Realtime fan-out benchmark: /api/v1/ws (plain) and /api/v1/socket.io, one gateway core.

    .venv/bin/python bench/ws.py                       # both paths, default rates
    .venv/bin/python bench/ws.py --path plain --rates 100,200,400 --duration 5
    .venv/bin/python bench/ws.py --path plain --paced-rates 200,400 --json out.json

What runs where (the machine has 2 cores):
- the gateway (`potok run`, one worker, memory bus) pinned to CPU 0;
- one subscriber process holding every connection, and one publisher process,
  both pinned to CPU 1. They are raw asyncio (uvloop) protocols that only find
  frame boundaries and read the publish timestamp carried in each event, so one
  core can take a few hundred thousand messages a second.

Scenarios, each with N connections (default 1,000):
- fanout:  every connection subscribed to one channel; an event reaches all N.
- spread:  100 channels of N/100 subscribers; events go round-robin over them.

The publisher sends events as `message` frames on its own WebSocket, at
increasing rates, in one of two ways:
- bursts every 10 ms (`fanout`, `spread`): the gateway may write a whole burst
  to a subscriber in one write, so delivered msg/s grows with the burst size;
- paced (`fanout-paced`): one event per write at even intervals, so (while the
  gateway keeps up) every message costs it one write per subscriber.

Each event carries its publish time. Per step, measured over the publishing
window only (from the publisher's first event to its last, not its start-up or
the tail after it):
- on-time msg/s: messages the subscribers had received when publishing ended,
  per second of publishing; what arrives later is counted as `late` (with the
  `drain`, how long after the end the last one came), never as throughput;
- lag p50/p99/max: publish -> delivery time of every message, late ones included;
- msgs/read: event messages per read() at the subscribers, i.e. how many
  messages the gateway put in one write (an upper bound when subscribers lag);
- gateway CPU: the gateway process's utime+stime / wall over the window;
- others: the CPU other processes on the machine used meanwhile (from /proc), so
  a disturbed run is visible; a step is redone (up to twice) when others used
  more than 15 % of the machine.

Memory per idle connection: gateway RSS with M authenticated, subscribed, idle
connections minus RSS before they connected, divided by M.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import multiprocessing as mp
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from array import array
from pathlib import Path
from typing import Any

import jwt
import psutil
import uvloop
import yaml

SECRET = "bench-realtime-secret-0123456789abcdef"
ISSUER = "https://bench.local"
GATEWAY_CPU = 0
CLIENT_CPU = 1
TICK = 0.01  # the publisher's burst interval
FOREIGN_LIMIT = 15.0  # % of the machine used by other processes above which a step is redone
QUIET_WAIT = 30.0  # at most this long waiting for a quiet machine before a step
PAD = "x" * 60  # event payload padding (an event frame is ~200 bytes)


def make_token(sub: str) -> str:
    now = int(time.time())
    claims = {"iss": ISSUER, "sub": sub, "org": "bench", "iat": now, "exp": now + 3600}
    return jwt.encode(claims, SECRET, algorithm="HS256")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# -- how busy other processes keep the machine (Linux /proc) --------------------------------------

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def _process_tree_ticks(root: int) -> int:
    """CPU ticks of `root` and all its descendants (reaped children included)."""
    stats: dict[int, tuple[int, int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            rest = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        stats[int(entry)] = (int(rest[1]), sum(int(x) for x in rest[11:15]))
    children: dict[int, list[int]] = {}
    for pid, (ppid, _) in stats.items():
        children.setdefault(ppid, []).append(pid)
    total, todo = 0, [root]
    while todo:
        pid = todo.pop()
        if pid in stats:
            total += stats[pid][1]
            todo.extend(children.get(pid, ()))
    return total


def cpu_snapshot(root: int) -> tuple[float, int, int]:
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
    busy = sum(fields) - fields[3] - fields[4]  # everything but idle and iowait
    return time.monotonic(), busy, _process_tree_ticks(root)


def foreign_pct(before: tuple[float, int, int], after: tuple[float, int, int]) -> float:
    """% of the whole machine used by processes outside `root`'s tree in between."""
    wall = after[0] - before[0]
    other = (after[1] - before[1]) - (after[2] - before[2])
    return max(0.0, other / CLOCK_TICKS / wall / (os.cpu_count() or 1) * 100) if wall > 0 else 0.0


# -- the gateway ----------------------------------------------------------------------------


def start_gateway(directory: Path) -> tuple[subprocess.Popen[bytes], int]:
    port = free_port()
    config = {
        "server": {"host": "127.0.0.1", "port": port, "workers": 1},
        "logging": {"level": "warning", "access_log": {"enabled": False}},
        "realtime": {
            "auth": {
                "issuers": [{"issuer": ISSUER, "keys": [{"algorithm": "HS256", "secret": SECRET}]}],
                "timeout": "60s",
            },
            "channels": [{"pattern": "bench:*", "publish": True}],
            # Room for bursts: a subscriber is cut off only past 16 MiB unsent.
            "limits": {"send_buffer": "16MiB", "max_subscriptions": 10},
            "history": {"size": 0},
        },
    }
    path = directory / "potok.yaml"
    path.write_text(yaml.safe_dump(config))
    command = [sys.executable, "-m", "potok", "run", "--config", str(path)]
    if shutil.which("taskset"):
        command = ["taskset", "-c", str(GATEWAY_CPU), *command]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return process, port
        except OSError:
            time.sleep(0.05)
    process.kill()
    raise RuntimeError("the gateway did not start")


# -- a minimal WebSocket client (raw frames, zero mask) --------------------------------------


def client_frame(payload: bytes, opcode: int = 1) -> bytes:
    length = len(payload)
    if length < 126:
        head = bytes((0x80 | opcode, 0x80 | length))
    elif length < 65536:
        head = bytes((0x80 | opcode, 0xFE)) + length.to_bytes(2, "big")
    else:
        head = bytes((0x80 | opcode, 0xFF)) + length.to_bytes(8, "big")
    return head + b"\0\0\0\0" + payload  # a zero mask leaves the payload as it is


class Stats:
    """What every subscriber connection of one process adds to."""

    def __init__(self) -> None:
        self.count = 0
        self.latencies = array("d")
        self.recording = False


class WsClient(asyncio.Protocol):
    """One connection: handshake, then `on_message` per text frame; pings answered."""

    def __init__(self, path: str, port: int, stats: Stats, start: list[bytes]) -> None:
        self.request = (
            f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
            "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
            "Sec-WebSocket-Version: 13\r\n\r\n"
        ).encode()
        self.stats = stats
        self.start = start
        self.buffer = b""
        self.switched = False
        self.ready = asyncio.get_running_loop().create_future()
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        transport.write(self.request)  # type: ignore[attr-defined]

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.ready.done():
            self.ready.set_exception(ConnectionError("closed before ready"))

    def send(self, payload: bytes, opcode: int = 1) -> None:
        assert self.transport is not None
        self.transport.write(client_frame(payload, opcode))

    def data_received(self, data: bytes) -> None:
        buffer = self.buffer + data if self.buffer else data
        if not self.switched:
            end = buffer.find(b"\r\n\r\n")
            if end < 0:
                self.buffer = buffer
                return
            assert buffer.startswith(b"HTTP/1.1 101"), buffer[:200]
            self.switched = True
            buffer = buffer[end + 4 :]
            for message in self.start:
                self.send(message)
        at, size = 0, len(buffer)
        stats = self.stats
        while size - at >= 2:
            b0, length = buffer[at], buffer[at + 1] & 0x7F
            head = 2
            if length == 126:
                if size - at < 4:
                    break
                length = int.from_bytes(buffer[at + 2 : at + 4], "big")
                head = 4
            elif length == 127:
                if size - at < 10:
                    break
                length = int.from_bytes(buffer[at + 2 : at + 10], "big")
                head = 10
            end = at + head + length
            if end > size:
                break
            opcode = b0 & 0x0F
            if opcode == 1:
                self.on_message(buffer[at + head : end], stats)
            elif opcode == 9:  # ping -> pong
                self.send(buffer[at + head : end], 0xA)
            at = end
        self.buffer = buffer[at:] if at < size else b""

    def on_message(self, payload: bytes, stats: Stats) -> None:
        t_at = payload.find(b'"t":')
        if t_at >= 0:
            stats.count += 1
            if stats.recording:
                stop = payload.find(b",", t_at)
                stats.latencies.append(time.time() - float(payload[t_at + 4 : stop]))
        elif not self.ready.done() and b'"subscribed"' in payload:
            self.ready.set_result(None)


# -- subscribers (the C client) and the publisher process -------------------------------------

CLIENT_SOURCE = Path(__file__).resolve().parent / "ws_client.c"
CLIENT_BINARY = Path(__file__).resolve().parent / ".work" / "ws_client"


def build_client() -> Path:
    if not CLIENT_BINARY.exists() or CLIENT_BINARY.stat().st_mtime < CLIENT_SOURCE.stat().st_mtime:
        CLIENT_BINARY.parent.mkdir(parents=True, exist_ok=True)
        subprocess.run(
            ["cc", "-O2", "-Wall", "-o", str(CLIENT_BINARY), str(CLIENT_SOURCE)], check=True
        )
    return CLIENT_BINARY


class Subscribers:
    """The C client holding every subscriber connection, pinned to the client CPU."""

    def __init__(self, port: int, kind: str, count: int, prefix: str, channels: int) -> None:
        command = [
            str(build_client()), "127.0.0.1", str(port), "plain" if kind == "plain" else "sio",
            str(count), prefix, str(channels), make_token("subscriber"),
        ]  # fmt: skip
        if shutil.which("taskset"):
            command = ["taskset", "-c", str(CLIENT_CPU), *command]
        self.process = subprocess.Popen(
            command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
        )
        assert self.process.stdout is not None
        line = self.process.stdout.readline().strip()
        if line != "ready":
            raise RuntimeError(f"subscribers did not connect (exit {self.process.poll()})")

    def command(self, text: str) -> dict[str, Any] | None:
        assert self.process.stdin is not None and self.process.stdout is not None
        self.process.stdin.write(text + "\n")
        self.process.stdin.flush()
        if text == "stop":
            result: dict[str, Any] = json.loads(self.process.stdout.readline())
            return result
        return None

    def close(self) -> None:
        if self.process.poll() is None:
            self.command("quit")
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def _pin(cpu: int) -> None:
    with contextlib.suppress(AttributeError, OSError):
        os.sched_setaffinity(0, {cpu})


def publisher_main(  # noqa: PLR0917
    port: int, channels: list[str], rate: float, seconds: float, paced: bool, conn: Any
) -> None:
    """Publish for `seconds`: in bursts every TICK, or `paced`, one event per write at
    even intervals. Tells `conn` "started" before the first event and "ended" after the
    last, so the measurements cover publishing only."""
    _pin(CLIENT_CPU)

    async def main() -> None:
        stats = Stats()
        token = make_token("publisher")
        loop = asyncio.get_running_loop()
        first = json.dumps({"type": "subscribe", "channel": "bench:publisher"}).encode()
        _, client = await loop.create_connection(
            lambda: WsClient(f"/api/v1/ws?token={token}", port, stats, [first]),
            "127.0.0.1",
            port,
        )
        await client.ready
        index = 0

        def send_one() -> None:
            nonlocal index
            channel = channels[index % len(channels)]
            index += 1
            data = f'{{"t":{time.time():.6f},"p":"{PAD}"}}'
            body = f'{{"type":"message","channel":"{channel}","event":"b","data":{data}}}'
            client.send(body.encode())

        conn.send("started")
        started = time.monotonic()
        if paced:
            await _paced(send_one, rate, seconds, started)
        else:
            await _bursts(send_one, rate, seconds, started)
        elapsed = time.monotonic() - started
        conn.send("ended")
        await asyncio.sleep(0.5)  # let the acks come back before closing
        conn.send({"sent": index, "seconds": elapsed})
        assert client.transport is not None
        client.transport.close()

    uvloop.run(main())


async def _bursts(send_one: Any, rate: float, seconds: float, started: float) -> None:
    """Every TICK, the events due by then: the gateway can write each burst to a
    subscriber in one write."""
    sent = 0
    next_tick = started
    while (now := time.monotonic()) - started < seconds:
        for _ in range(max(0, int((now - started + TICK) * rate) - sent)):
            send_one()
            sent += 1
        next_tick += TICK
        await asyncio.sleep(max(0.0, next_tick - time.monotonic()))


async def _paced(send_one: Any, rate: float, seconds: float, started: float) -> None:
    """One event per loop iteration (one write, one TCP segment: the socket has
    TCP_NODELAY) at even intervals; when behind, still one per iteration."""
    interval = 1.0 / rate
    due = started
    while time.monotonic() - started < seconds:
        send_one()
        due += interval
        await asyncio.sleep(max(0.0, due - time.monotonic()))


# -- one scenario at increasing rates ---------------------------------------------------------


def run_scenario(  # noqa: PLR0917
    port: int,
    gateway: psutil.Process,
    kind: str,
    name: str,
    prefix: str,
    channels: int,
    publish_channels: list[str],
    fanout: int,
    rates: list[float],
    seconds: float,
    paced: bool = False,
) -> list[dict[str, Any]]:
    subscribers = Subscribers(port, kind, fanout * channels, prefix, channels)
    rows = []
    try:
        for rate in rates:
            for attempt in range(3):
                row = _step(
                    port, gateway, subscribers, kind, name, publish_channels, fanout, rate,
                    seconds, paced,
                )  # fmt: skip
                if row["foreign_cpu_pct"] <= FOREIGN_LIMIT:
                    break
                foreign = row["foreign_cpu_pct"]
                print(f"  (disturbed: others used {foreign:.0f}% CPU; retry {attempt + 1})")
            row["disturbed"] = row["foreign_cpu_pct"] > FOREIGN_LIMIT
            rows.append(row)
            print(_line(row), flush=True)
            if row["p99_ms"] > 500 or row["delivered_per_s"] < 0.5 * row["expected_per_s"]:
                break  # far past saturation: higher rates only queue
    finally:
        subscribers.close()
    return rows


def _step(  # noqa: PLR0917
    port: int,
    gateway: psutil.Process,
    subscribers: Subscribers,
    kind: str,
    name: str,
    publish_channels: list[str],
    fanout: int,
    rate: float,
    seconds: float,
    paced: bool,
) -> dict[str, Any]:
    """One rate: wait (bounded) for a quiet machine, publish for `seconds`, measure."""
    ctx = mp.get_context("spawn")
    root = os.getpid()
    deadline = time.monotonic() + QUIET_WAIT
    while True:
        before = cpu_snapshot(root)
        time.sleep(1.0)
        if foreign_pct(before, cpu_snapshot(root)) < FOREIGN_LIMIT:
            break
        if time.monotonic() > deadline:
            break
    subscribers.command("start")
    pub_parent, pub_child = ctx.Pipe()
    publisher = ctx.Process(
        target=publisher_main, args=(port, publish_channels, rate, seconds, paced, pub_child)
    )
    publisher.start()
    assert pub_parent.recv() == "started"  # the publisher is connected: measure from here
    cpu_before = gateway.cpu_times()
    machine_before = cpu_snapshot(root)
    wall_before = time.monotonic()
    assert pub_parent.recv() == "ended"
    wall = time.monotonic() - wall_before
    cpu_after = gateway.cpu_times()
    machine_after = cpu_snapshot(root)
    subscribers.command("mark")  # what arrives from now on was late
    published = pub_parent.recv()
    publisher.join()
    foreign = foreign_pct(machine_before, machine_after)
    result = subscribers.command("stop")
    assert result is not None
    cpu = ((cpu_after.user - cpu_before.user) + (cpu_after.system - cpu_before.system)) / wall
    return {
        "path": kind,
        "scenario": name,
        "rate": rate,
        "published_per_s": published["sent"] / published["seconds"],
        "expected_per_s": published["sent"] * fanout / published["seconds"],
        "delivered_per_s": result["on_time"] / published["seconds"],
        "late": result["count"] - result["on_time"],
        "drain_ms": result["drain"] * 1000,
        "p50_ms": result["p50"] * 1000,
        "p99_ms": result["p99"] * 1000,
        "max_ms": result["max"] * 1000,
        "per_read": result["per_read"],
        "gateway_cpu_pct": cpu * 100,
        "foreign_cpu_pct": foreign,
    }


def _line(row: dict[str, Any]) -> str:
    return (
        f"{row['path']:8} {row['scenario']:12} events/s {row['published_per_s']:8.0f}  "
        f"on time/s {row['delivered_per_s']:9.0f} (of {row['expected_per_s']:9.0f}, "
        f"late {row['late']})  lag p50 {row['p50_ms']:6.1f} p99 {row['p99_ms']:6.1f} "
        f"max {row['max_ms']:6.1f} ms  msgs/read {row['per_read']:5.1f}  "
        f"gateway CPU {row['gateway_cpu_pct']:5.1f}%  others {row['foreign_cpu_pct']:4.1f}%"
    )


def idle_memory(port: int, gateway: psutil.Process, kind: str, count: int) -> float:
    time.sleep(1.0)
    before = gateway.memory_info().rss
    subscribers = Subscribers(port, kind, count, "bench:idle", 1)
    time.sleep(1.0)
    after = gateway.memory_info().rss
    subscribers.close()
    time.sleep(1.0)
    return (after - before) / count


# -- main ---------------------------------------------------------------------------------------


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--path", choices=["plain", "socketio", "both"], default="both")
    parser.add_argument("--connections", type=int, default=1000)
    parser.add_argument("--rates", default="50,100,200,300,400,600,800")
    parser.add_argument("--spread-rates", default="1000,2000,4000,6000,8000,12000")
    parser.add_argument("--socketio-rates", default="50,100,200,300,400,600")
    parser.add_argument(
        "--paced-rates", default="100,200,400,600,800", help="fanout, one event per write"
    )
    parser.add_argument("--duration", type=float, default=5.0)
    parser.add_argument("--idle", type=int, default=2000, help="connections for the memory figure")
    parser.add_argument("--json", type=Path, help="write the rows here")
    args = parser.parse_args()

    directory = Path(tempfile.mkdtemp(prefix="potok-bench-ws-"))
    process, port = start_gateway(directory)
    gateway = psutil.Process(process.pid)
    results: dict[str, Any] = {"connections": args.connections, "rows": [], "idle_bytes": {}}
    n = args.connections
    try:
        kinds = ["plain", "socketio"] if args.path == "both" else [args.path]
        for kind in kinds:
            results["idle_bytes"][kind] = idle_memory(port, gateway, kind, args.idle)
            print(f"{kind}: {results['idle_bytes'][kind] / 1024:.1f} KiB per idle connection")
            fan_rates = args.rates if kind == "plain" else args.socketio_rates
            results["rows"] += run_scenario(
                port, gateway, kind, "fanout", "bench:all", 1, ["bench:all"], n,
                [float(r) for r in fan_rates.split(",")], args.duration,
            )  # fmt: skip
            if kind == "plain" and args.paced_rates:
                results["rows"] += run_scenario(
                    port, gateway, kind, "fanout-paced", "bench:all", 1, ["bench:all"], n,
                    [float(r) for r in args.paced_rates.split(",")], args.duration, paced=True,
                )  # fmt: skip
            spread_rates = [float(r) for r in args.spread_rates.split(",")]
            publish_to = [f"bench:ch{i}" for i in range(100)]
            results["rows"] += run_scenario(
                port, gateway, kind, "spread", "bench:ch", 100, publish_to, n // 100,
                spread_rates, args.duration,
            )  # fmt: skip
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    print()
    print(markdown(results))
    return 0


def markdown(results: dict[str, Any]) -> str:
    """The rows as a Markdown table (for BENCHMARKS.md)."""
    lines = [
        "| path | scenario | events/s | on-time msg/s (of expected) | late | lag p50 / p99 / max"
        " ms | drain ms | msgs/read | gateway CPU | others |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in results["rows"]:
        mark = " (disturbed)" if row.get("disturbed") else ""
        lines.append(
            f"| {row['path']} | {row['scenario']} | {row['published_per_s']:.0f} | "
            f"{row['delivered_per_s']:,.0f} of {row['expected_per_s']:,.0f} | {row['late']:,} | "
            f"{row['p50_ms']:.1f} / {row['p99_ms']:.1f} / {row['max_ms']:.0f} | "
            f"{row['drain_ms']:.0f} | {row['per_read']:.1f} | {row['gateway_cpu_pct']:.0f}% | "
            f"{row['foreign_cpu_pct']:.0f}%{mark} |"
        )
    for kind, size in results["idle_bytes"].items():
        lines.append(f"\nMemory per idle connection ({kind}): {size / 1024:.1f} KiB")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
