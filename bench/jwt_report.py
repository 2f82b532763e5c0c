"""The table of bench/jwt.sh: open route vs JWT routes (stdlib only; parsing from report.py).

    python bench/jwt_report.py --raw bench/results/jwt-raw-latest --out bench/results/jwt-latest.md
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
from pathlib import Path

_spec = importlib.util.spec_from_file_location("report", Path(__file__).with_name("report.py"))
assert _spec is not None and _spec.loader is not None
report = importlib.util.module_from_spec(_spec)
sys.modules["report"] = report
_spec.loader.exec_module(report)

ROUTES = (
    ("open", "open route (no auth)"),
    ("hs256", "JWT HS256 (verified-token cache)"),
    ("rs256", "JWT RS256 (verified-token cache)"),
)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--raw", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    meta = dict(
        line.split("=", 1) for line in (args.raw / "meta.env").read_text().splitlines() if "=" in line
    )
    rows = []
    for name, label in ROUTES:
        files = sorted(args.raw.glob(f"{name}.wrk50.*.txt"))
        runs = [report.parse_wrk(f.read_text(errors="replace")) for f in files]
        rows.append(
            {
                "name": name,
                "label": label,
                "rps": report.median([r.rps for r in runs]),
                "p50": report.median([r.p50_ms for r in runs]),
                "p99": report.median([r.p99_ms for r in runs]),
                "per_round": [r.rps for r in runs],
                "non2xx": sum(r.non2xx for r in runs),
                "errors": sum(r.socket_error_total for r in runs),
            }
        )
    open_rps = rows[0]["rps"]
    head = "| Route | req/s @50 | p50 ms | p99 ms | share of open | req/s per round | non-2xx | socket errors |"
    lines = [head, "|:---|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        share = f"{r['rps'] / open_rps * 100:.1f} %" if r["rps"] and open_rps else "n/a"
        rounds = ", ".join(f"{v:,.0f}" for v in r["per_round"] if v is not None)
        lines.append(
            f"| {r['label']} | {r['rps']:,.0f} | {r['p50']:.2f} | {r['p99']:.2f} | {share} "
            f"| {rounds} | {r['non2xx']} | {r['errors']} |"
        )
    mach = report.machine()
    setup = (
        f"{meta['ROUNDS']} round(s) x {meta['DURATION']} s of `wrk -t1 -c50` per route (median), "
        f"{meta['WARMUP']} s warm-up; Potok on core {meta['PROXY_CPU']}, nginx upstream and wrk on "
        f"core {meta['LOAD_CPU']}" + (" — QUICK smoke run" if meta.get("QUICK") == "1" else "")
    )
    checks = []
    for r in rows[1:]:
        if r["rps"] and open_rps:
            share = r["rps"] / open_rps
            verdict = "MET" if share >= 0.9 else "NOT MET"
            checks.append(f"{r['label']} >= 90 % of the open route: {share * 100:.1f} % -> {verdict}")
    text = "\n".join(
        [
            f"JWT benchmark — {setup}",
            f"{mach['CPU']}, {mach['Cores']} cores, kernel {mach['Kernel']}, Python {mach['Python']}, "
            f"{mach['Potok']}",
            "",
            *lines,
            "",
            *checks,
        ]
    )
    print(text)
    args.out.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
