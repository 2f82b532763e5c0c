"""`potok status`: the running gateway in a terminal, from its admin API.

Workers, services and their targets, breakers that are not closed, request rates per
route (two reads of /admin/traffic `--interval` apart), rate limits with the keys they
refuse most, WebSocket connections and the last reloads. Where to ask: `--url`, or the
config's metrics listener (`metrics.listen`), or with `admin.public` its public port.
Credentials, when the port asks for them: `--token` / $POTOK_ADMIN_TOKEN (a bearer
token) or `--api-key` / $POTOK_ADMIN_KEY.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import urllib.error
import urllib.request
from datetime import UTC, datetime
from typing import Any

from potok.cli.common import add_config_argument
from potok.config.loader import ConfigError, load_config

PATH = "/api/v1/admin"


def register(commands: Any) -> None:
    parser: argparse.ArgumentParser = commands.add_parser(
        "status", help="summary of the running gateway (admin API)"
    )
    add_config_argument(parser)
    parser.add_argument("--url", help="the admin API's base URL, e.g. http://127.0.0.1:9100")
    parser.add_argument("--token", default=os.environ.get("POTOK_ADMIN_TOKEN"), help="bearer token")
    parser.add_argument("--api-key", default=os.environ.get("POTOK_ADMIN_KEY"), help="API key")
    parser.add_argument(
        "--interval",
        type=float,
        default=1.0,
        help="seconds between the two traffic reads the rates come from (0: totals only)",
    )
    parser.add_argument("--json", action="store_true", help="the admin API's document as is")
    parser.set_defaults(handler=main)


class StatusError(Exception):
    pass


def base_url(args: argparse.Namespace) -> str:
    if args.url:
        return str(args.url).rstrip("/")
    try:
        config = load_config(args.config)
    except ConfigError as exc:
        raise StatusError(f"{args.config}: {exc}; or give --url") from None
    address = config.metrics.address()
    if address is not None:
        host, port = address
    elif config.admin.public:
        host, port = config.server.host, config.server.port
    else:
        raise StatusError(
            f"{args.config}: the admin API is on no port (set metrics.listen or admin.public)"
        )
    if host in ("0.0.0.0", ""):
        host = "127.0.0.1"
    elif host == "::":
        host = "::1"
    if ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{port}"


def fetch(url: str, args: argparse.Namespace) -> dict[str, Any]:
    headers = {"Accept": "application/json"}
    if args.token:
        headers["Authorization"] = f"Bearer {args.token}"
    elif args.api_key:
        headers["X-API-Key"] = args.api_key
    request = urllib.request.Request(url, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            document: dict[str, Any] = json.loads(response.read())
            return document
    except urllib.error.HTTPError as exc:
        try:
            detail = json.loads(exc.read()).get("detail", "")
        except ValueError:
            detail = ""
        raise StatusError(f"{url}: {exc.code} {detail}".rstrip()) from None
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise StatusError(f"{url}: {reason}") from None


def main(args: argparse.Namespace) -> int:
    try:
        base = base_url(args) + PATH
        first = fetch(base + "/traffic", args) if args.interval > 0 else None
        if first is not None:
            time.sleep(args.interval)
        status = fetch(base + "/status", args)
        if not {"workers", "services", "traffic"} <= set(status):
            raise StatusError(f"{base}/status: not a Potok admin API answer")
    except StatusError as exc:
        print(f"potok status: {exc}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(status, indent=2))
        return 0
    rates = _rates(first, status, args.interval) if first is not None else None
    print(render(status, rates))
    return 0


def _rates(
    first: dict[str, Any], status: dict[str, Any], interval: float
) -> dict[str, tuple[float, float]]:
    """(requests/s, 5xx/s) per route between the two reads (a restarted worker's counts
    start again: a negative difference counts as zero)."""
    before = first["routes"]
    out = {}
    for route, counts in status["traffic"].items():
        old = before.get(route, {})
        requests = max(0, counts["requests"] - old.get("requests", 0)) / interval
        errors = max(0, counts["5xx"] - old.get("5xx", 0)) / interval
        out[route] = (requests, errors)
    return out


def render(status: dict[str, Any], rates: dict[str, tuple[float, float]] | None) -> str:
    lines: list[str] = []
    workers = status["workers"]
    up = [w for w in workers if "unreachable" not in w]
    lines.append(
        f"potok: config {status['digest']}, {len(up)}/{status['expected_workers']} workers up"
    )
    lines += _workers(workers)
    lines += _services(status["services"])
    lines += _breakers(status["services"])
    lines += _traffic(status["traffic"], rates)
    lines += _limits(status["rate_limits"])
    realtime = status["realtime"]
    if realtime["enabled"]:
        lines += ["", f"REALTIME  {realtime['connections']} connections, "
                  f"{realtime['channel_count']} channels"]  # fmt: skip
        lines += [f"  {c['channel']:<40} {c['subscribers']:>6}" for c in realtime["channels"][:5]]
    lines += _reloads(status["reloads"])
    return "\n".join(lines)


def _workers(workers: list[dict[str, Any]]) -> list[str]:
    lines = [
        "",
        "WORKERS",
        f"  {'id':<4} {'pid':>7} {'uptime':>9} {'conns':>6} {'in-flight':>9}  config",
    ]
    for worker in workers:
        if "unreachable" in worker:
            lines.append(f"  {worker['id']:<4} unreachable")
            continue
        lines.append(
            f"  {worker['id']:<4} {worker['pid']:>7} {_duration(worker['uptime_s']):>9} "
            f"{worker['connections']:>6} {worker['in_flight']:>9}  {worker['config_digest']}"
        )
    return lines


def _services(services: dict[str, Any]) -> list[str]:
    lines = ["", "SERVICES"]
    if not services:
        lines.append("  (none)")
    for name, service in services.items():
        targets = service["targets"]
        healthy = sum(1 for t in targets if t["healthy"] and not t["drained"])
        lines.append(
            f"  {name:<24} breaker {service['breaker'] or 'none':<9} "
            f"{healthy}/{len(targets)} targets serving"
        )
        for target in targets:
            state = "drained" if target["drained"] else "healthy" if target["healthy"] else "DOWN"
            lines.append(
                f"    {target['target']:<28} {state:<8} in-flight {target['in_flight']:<4} "
                f"ejections {target['ejections']}"
            )
    return lines


def _breakers(services: dict[str, Any]) -> list[str]:
    lines = []
    for name, service in services.items():
        for worker, breaker in sorted(service["breakers"].items()):
            if breaker["state"] == "closed" and not breaker["forced"]:
                continue
            held = f", held {breaker['forced']} by an operator" if breaker["forced"] else ""
            lines.append(
                f"  {name:<24} worker {worker}: {breaker['state']}{held} "
                f"({breaker['reason'] or 'no reason'}); half-open in "
                f"{breaker['half_open_in_s']:g}s"
            )
    return ["", "BREAKERS NOT CLOSED", *lines] if lines else ["", "BREAKERS  all closed"]


def _traffic(traffic: dict[str, Any], rates: dict[str, tuple[float, float]] | None) -> list[str]:
    header = "req/s   5xx/s" if rates is not None else ""
    lines = ["", f"TRAFFIC  {'route':<28} {'total':>9} {'5xx':>7}  {header}".rstrip()]
    for route, counts in traffic.items():
        rate = ""
        if rates is not None:
            requests, errors = rates.get(route, (0.0, 0.0))
            rate = f"{requests:>7.1f} {errors:>7.1f}"
        lines.append(
            f"         {route:<28} {counts['requests']:>9} {counts['5xx']:>7}  {rate}".rstrip()
        )
    return lines


def _limits(limits: list[dict[str, Any]]) -> list[str]:
    if not limits:
        return []
    lines = ["", "RATE LIMITS (refusals, last 1-2 minutes: top keys)"]
    for limit in limits:
        top = ", ".join(f"{k['key']} ({k['refused']})" for k in limit["top_keys"][:3]) or "-"
        routes = ",".join(limit["routes"])
        lines.append(
            f"  {routes:<20} {limit['label']:<16} key {limit['key']:<8} "
            f"refused {limit['refused_total']:<6} top: {top}"
        )
    return lines


def _reloads(reloads: list[dict[str, Any]]) -> list[str]:
    lines = ["", "RELOADS"]
    if not reloads:
        return [*lines, "  none since start"]
    for record in reloads:
        when = datetime.fromtimestamp(record["at"], UTC).strftime("%Y-%m-%d %H:%M:%SZ")
        problems = f": {'; '.join(record['problems'])}" if record["problems"] else ""
        lines.append(
            f"  {when}  worker {record['worker']}  {record['trigger']:<22} "
            f"{record['result']}{problems}"
        )
    return lines


def _duration(seconds: float) -> str:
    seconds = int(seconds)
    if seconds < 120:
        return f"{seconds}s"
    if seconds < 7200:
        return f"{seconds // 60}m"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
