"""`potok routes`: the compiled route table, most specific first."""

from __future__ import annotations

import argparse
from typing import Any

from potok.cli.common import add_config_argument, load_or_report
from potok.config.models import GatewayConfig
from potok.runtime import Runtime


def register(commands: Any) -> None:
    parser: argparse.ArgumentParser = commands.add_parser(
        "routes", help="print the compiled route table"
    )
    add_config_argument(parser)
    parser.set_defaults(handler=main)


def table_rows(config: GatewayConfig) -> list[tuple[str, ...]]:
    runtime = Runtime(config)
    by_name = {route.name: cfg for route, cfg in zip(runtime.routes, config.routes, strict=True)}
    rows: list[tuple[str, ...]] = []
    for entry in runtime.table.entries:
        route = entry.target
        cfg = by_name[route.name]
        methods = ",".join(sorted(m.decode() for m in entry.methods)) or "*"
        kind = "exact" if entry.exact else "prefix"
        match = f"{entry.host or '*'} {kind} {entry.pattern}"
        if cfg.rewrite is not None:
            rewrite = f"-> {cfg.rewrite or '/'}"
        elif cfg.strip_prefix:
            rewrite = "strip prefix"
        else:
            rewrite = "-"
        rows.append(
            (
                route.name,
                methods,
                match,
                cfg.service or " ".join(f"{v.name}:{v.weight}" for v in cfg.services),
                rewrite,
                ",".join(route.pipeline.names) or "-",
            )
        )
    return rows


def main(args: argparse.Namespace) -> int:
    config = load_or_report(args.config)
    if config is None:
        return 1
    header = ("ROUTE", "METHODS", "MATCH (host kind path)", "SERVICE", "REWRITE", "POLICIES")
    rows = [header, *table_rows(config)]
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    for row in rows:
        print(
            "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        )
    return 0
