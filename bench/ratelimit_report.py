"""The table of bench/ratelimit.sh: open route vs memory and Redis rate limits (stdlib only;
parsing from report.py).

    python bench/ratelimit_report.py --raw bench/results/ratelimit-raw-latest \
        --out bench/results/ratelimit-latest.md
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

LABELS = {
    "open": "open route (no limit)",
    "memory": "memory, sliding window",
    "memory-tb": "memory, token bucket",
    "redis": "Redis, sliding window",
    "redis-tb": "Redis, token bucket",
    "memory-noheaders": "memory, sliding window, no RateLimit headers",
    "redis-noheaders": "Redis, sliding window, no RateLimit headers",
}
# The goals: memory < 5 % of req/s; Redis < 15 % and < 1 ms added p99.
GOALS = {
    "memory": (0.05, None),
    "memory-tb": (0.05, None),
    "redis": (0.15, 1.0),
    "redis-tb": (0.15, 1.0),
}


def runs(raw: Path, name: str, kind: str, parse):
    files = sorted(raw.glob(f"{name}.{kind}.*.txt"), key=lambda p: int(p.stem.rsplit(".", 1)[1]))
    out = []
    for f in files:
        run = parse(f.read_text(errors="replace"))
        foreign = f.with_suffix(".foreign")
        if foreign.exists():
            run.foreign_pct = float(foreign.read_text().strip() or "nan")
        cpu = f.with_suffix(".cpu")
        if cpu.exists():
            run.cpu_s = float(cpu.read_text().strip() or "nan")
        evalsha = f.with_suffix(".evalsha")
        calls = int(evalsha.read_text().strip() or 0) if evalsha.exists() else 0
        run.checks_per_call = run.requests / calls if calls and run.requests else None
        loadcore = f.with_suffix(".loadcore")
        run.load_core_pct = float(loadcore.read_text() or "nan") if loadcore.exists() else None
        out.append(run)
    return out


# Frames that are the rate limit's own work: the policy and its store, and the Redis client.
RATE_LIMIT_FILES = ("potok/policies/rate_limit/", "/redis/", "hiredis")


def profile_lines(results: Path, rows: list[dict]) -> list[str]:
    """Share of py-spy samples in rate-limit code per profiled route (PROFILE=1), and
    that share of the route's CPU per request: the rate limit's cost in µs per check."""
    stacks_py = Path(__file__).with_name("stacks.py")
    spec = importlib.util.spec_from_file_location("stacks", stacks_py)
    assert spec is not None and spec.loader is not None
    stacks = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(stacks)
    lines = []
    for r in rows:
        path = results / f"ratelimit-profile-{r['name']}.collapsed.txt"
        if not path.exists():
            continue
        parsed = stacks.parse(path.read_text())
        total = sum(n for _, n in parsed)
        ours = sum(
            n
            for frames, n in parsed
            if any(any(part in frame for part in RATE_LIMIT_FILES) for frame in frames)
        )
        if not total:
            continue
        share = ours / total
        per_check = f", ~{share * r['us']:.1f} µs per check" if r["us"] else ""
        lines.append(
            f"{r['label']}: {ours} of {total} py-spy samples in rate-limit code "
            f"({share * 100:.1f} %{per_check})"
        )
    return ["", "Profiles (PROFILE=1, py-spy 200 Hz, 8 s under wrk -c50):", *lines] if lines else []


def paired_cost(rounds: list[float | None], open_rounds: list[float | None]) -> float | None:
    """Median over rounds of (1 - route / open route in the same round). Each round runs
    the routes back to back, so a slow spell of the host (this VM's req/s drifts by
    +-15 % over minutes) lowers both sides of a pair; the median of per-route medians
    can pair a slow round of one route with a fast round of the other."""
    costs = [1 - r / o for r, o in zip(rounds, open_rounds, strict=False) if r and o]
    return report.median(costs) if costs else None


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--raw", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    meta = dict(
        line.split("=", 1)
        for line in (args.raw / "meta.env").read_text().splitlines()
        if "=" in line
    )
    rows = []
    for name in meta["ROUTES"].split():
        wrk = runs(args.raw, name, "wrk50", report.parse_wrk)
        hey = runs(args.raw, name, "hey2k", report.parse_hey)
        rows.append(
            {
                "name": name,
                "label": LABELS.get(name, name),
                "rps": report.median([r.rps for r in wrk]),
                "us": report.median([r.us_per_req for r in wrk]),
                "batch50": report.median([r.checks_per_call for r in wrk]),
                "core1": report.median([r.load_core_pct for r in wrk]),
                "proxy_busy": report.median(
                    [r.cpu_s / float(meta["DURATION"]) * 100 if r.cpu_s else None for r in wrk]
                ),
                "batch2k": report.median([r.checks_per_call for r in hey]),
                "p99": report.median([r.p99_ms for r in wrk]),
                "p50_2k": report.median([r.p50_ms for r in hey]),
                "p99_2k": report.median([r.p99_ms for r in hey]),
                "rate_2k": report.median([r.rps for r in hey]),
                "per_round": [r.rps for r in wrk],
                "bad": sum(r.non2xx + r.socket_error_total for r in wrk + hey),
                "foreign": max(
                    (r.foreign_pct for r in wrk + hey if r.foreign_pct is not None), default=None
                ),
            }
        )
    base = rows[0]
    head = (
        "| Route | req/s @50 | cost | paired cost | CPU µs/req @50 | added µs/req "
        "| Potok / load core busy @50 | p99 ms @50 | p50 ms @2k/s "
        "| p99 ms @2k/s | p99 added @2k/s | checks per EVALSHA @50 / @2k | req/s @50 per round "
        "| non-2xx + errors | other CPU (max) |"
    )
    lines = [head, "|:---|" + "---:|" * 14]
    checks = []
    for r in rows:
        cost = 1 - r["rps"] / base["rps"] if r["rps"] and base["rps"] else None
        paired = paired_cost(r["per_round"], base["per_round"])
        added = r["p99_2k"] - base["p99_2k"] if r["p99_2k"] is not None and base["p99_2k"] else None
        foreign = "n/a" if r["foreign"] is None else f"{r['foreign']:.0f} %"
        us = "n/a" if r["us"] is None else f"{r['us']:.1f}"
        busy = (
            f"{r['proxy_busy']:.0f} % / {r['core1']:.0f} %"
            if r["proxy_busy"] is not None and r["core1"] is not None
            else "n/a"
        )
        batches = (
            f"{r['batch50']:.1f} / {r['batch2k']:.1f}"
            if r["batch50"] is not None and r["batch2k"] is not None
            else "—"
        )
        added_us = (
            "—"
            if r is base or r["us"] is None or base["us"] is None
            else f"{r['us'] - base['us']:+.1f}"
        )
        rounds = ", ".join(f"{v:,.0f}" for v in r["per_round"] if v is not None)
        lines.append(
            f"| {r['label']} | {report._f(r['rps'], 'rps')} | "
            f"{'—' if r is base or cost is None else f'{cost * 100:.1f} %'} | "
            f"{'—' if r is base or paired is None else f'{paired * 100:.1f} %'} | "
            f"{us} | {added_us} | "
            f"{busy} | "
            f"{report._f(r['p99'], 'ms')} | {report._f(r['p50_2k'], 'ms')} | "
            f"{report._f(r['p99_2k'], 'ms')} | "
            f"{'—' if r is base or added is None else f'{added:+.2f}'} | {batches} | {rounds} | "
            f"{r['bad']} | "
            f"{foreign} |"
        )
        goal = GOALS.get(r["name"])
        if goal is not None and cost is not None and paired is not None:
            max_cost, max_p99 = goal
            ok = paired < max_cost and (max_p99 is None or (added is not None and added < max_p99))
            what = (
                f"paired cost {paired * 100:.1f} % (goal < {max_cost * 100:.0f} %; "
                f"cost of the medians {cost * 100:.1f} %)"
            )
            if max_p99 is not None and added is not None:
                what += f", p99 added at 2,000 req/s {added:+.2f} ms (goal < {max_p99:g} ms)"
            checks.append(f"{r['label']}: {what} -> {'MET' if ok else 'NOT MET'}")
    profiles = profile_lines(args.raw.parent, rows) if meta.get("PROFILE") == "1" else []
    mach = report.machine(meta.get("POTOK_SOURCE"))
    setup = (
        f"{meta['ROUNDS']} round(s) x {meta['DURATION']} s per route and load (median), "
        f"{meta['WARMUP']} s warm-up"
        + ("; a fresh Potok process per round" if meta.get("RESTART", "0") == "1" else "")
        + f"; `wrk -t1 -c50` and `hey -c 10 -q 200` (2,000 req/s); "
        f"Potok on core {meta['PROXY_CPU']}, nginx upstream and load generators on core "
        f"{meta['LOAD_CPU']}, "
        + (
            f"Redis (the benchmark's own redis-server) on core {meta.get('REDIS_CPU', '?')}"
            if meta.get("OWN_REDIS") == "1"
            else "Redis at REDIS_URL (not pinned by the benchmark)"
        )
        + (" — QUICK smoke run, not a measurement" if meta.get("QUICK") == "1" else "")
    )
    text = "\n".join(
        [
            f"Rate-limit benchmark — {setup}",
            f"{mach['CPU']}, {mach['Cores']} cores, kernel {mach['Kernel']}, "
            f"Python {mach['Python']}, {mach['Potok']}",
            "",
            *lines,
            "",
            *checks,
            *profiles,
        ]
    )
    print(text)
    args.out.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
