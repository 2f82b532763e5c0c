"""Turn the raw wrk/hey outputs of bench/proxy.sh into a table (stdlib only).

    python bench/report.py proxy --raw bench/results/raw-latest --out bench/results/proxy-latest.md

Prints a plain-text table to stdout and writes the same table as Markdown,
with a description of the machine, to --out.
"""

# ruff: noqa: E501  (long lines are table headers and report prose)
from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import os
import platform
import re
import statistics
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

LABELS = {
    "direct": "upstream direct (no proxy)",
    "nginx": "nginx proxy (1 worker, keepalive 64)",
    "caddy": "Caddy reverse_proxy (GOMAXPROCS=1)",
    "potok": "Potok bare",
    "potok-logged": "Potok + access log + metrics",
    "potok-w2": "Potok --workers 2 (cores {W2_CPUS})",
    "potok-traced1": "Potok + tracing, 1 % sampled",
    "potok-traced100": "Potok + tracing, 100 % sampled",
}

# ------------------------------------------------------------------ parsing --

_UNITS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60_000.0, "h": 3_600_000.0}
_WRK_LAT = re.compile(r"^\s*(50|75|90|99)%\s+([\d.]+)(us|ms|s|m|h)\s*$", re.M)
_WRK_RPS = re.compile(r"^Requests/sec:\s+([\d.]+)", re.M)
_WRK_TOTAL = re.compile(r"^\s*(\d+) requests in ([\d.]+)(us|ms|s|m|h)", re.M)
_WRK_NON2XX = re.compile(r"Non-2xx or 3xx responses:\s+(\d+)")
_WRK_SOCK = re.compile(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)")

_HEY_RPS = re.compile(r"^\s*Requests/sec:\s+([\d.]+)", re.M)
_HEY_LAT = re.compile(r"^\s*(10|25|50|75|90|95|99)% in ([\d.]+) secs", re.M)
_HEY_STATUS = re.compile(r"^\s*\[(\d{3})\]\s+(\d+) responses", re.M)
_HEY_ERRORS = re.compile(r"^\s*\[(\d+)\]\s+(.+)$", re.M)


@dataclass
class Run:
    rps: float | None = None
    p50_ms: float | None = None
    p99_ms: float | None = None
    requests: int = 0
    non2xx: int = 0
    socket_errors: dict[str, int] = field(default_factory=dict)
    error_lines: list[str] = field(default_factory=list)
    foreign_pct: float | None = None  # CPU used by processes outside the benchmark, % of all cores
    cpu_s: float | None = None  # CPU seconds used by the server under test (its process tree)

    @property
    def us_per_req(self) -> float | None:
        if self.cpu_s is None or not self.requests:
            return None
        return self.cpu_s * 1e6 / self.requests

    @property
    def socket_error_total(self) -> int:
        return sum(self.socket_errors.values())


def parse_wrk(text: str) -> Run:
    run = Run()
    if m := _WRK_RPS.search(text):
        run.rps = float(m.group(1))
    lat = {p: float(v) * _UNITS[u] for p, v, u in _WRK_LAT.findall(text)}
    run.p50_ms, run.p99_ms = lat.get("50"), lat.get("99")
    if m := _WRK_TOTAL.search(text):
        run.requests = int(m.group(1))
    if m := _WRK_NON2XX.search(text):
        run.non2xx = int(m.group(1))
    if m := _WRK_SOCK.search(text):
        run.socket_errors = dict(
            zip(("connect", "read", "write", "timeout"), map(int, m.groups()), strict=True)
        )
    if run.rps is None:
        run.error_lines.append(
            "wrk printed no result: " + " | ".join(text.strip().splitlines()[-3:])
        )
    return run


def parse_hey(text: str) -> Run:
    run = Run()
    if m := _HEY_RPS.search(text):
        run.rps = float(m.group(1))
    lat = {p: float(v) * 1000.0 for p, v in _HEY_LAT.findall(text)}
    run.p50_ms, run.p99_ms = lat.get("50"), lat.get("99")
    for code, count in _HEY_STATUS.findall(text):
        run.requests += int(count)
        if not code.startswith(("2", "3")):
            run.non2xx += int(count)
    if "Error distribution:" in text:
        tail = text.split("Error distribution:", 1)[1]
        for count, message in _HEY_ERRORS.findall(tail):
            run.socket_errors[message.strip()[:120]] = int(count)
    if run.rps is None:
        run.error_lines.append(
            "hey printed no result: " + " | ".join(text.strip().splitlines()[-3:])
        )
    return run


def median(values: list[float | None]) -> float | None:
    real = [v for v in values if v is not None]
    return statistics.median(real) if real else None


@dataclass
class Target:
    name: str
    label: str
    wrk50: list[Run]
    wrk10: list[Run]
    hey2k: list[Run]
    status: str = ""
    notes: str = ""
    retries: str = ""

    @property
    def runs(self) -> list[Run]:
        return self.wrk50 + self.wrk10 + self.hey2k

    def rps50(self) -> float | None:
        return median([r.rps for r in self.wrk50])

    def us50(self) -> float | None:
        return median([r.us_per_req for r in self.wrk50])

    def row(
        self, nginx_rps: float | None, nginx_us: float | None = None
    ) -> dict[str, float | int | str | None]:
        rps50 = self.rps50()
        us = self.us50()
        return {
            "label": self.label,
            "rps50": rps50,
            "p50_50": median([r.p50_ms for r in self.wrk50]),
            "p99_50": median([r.p99_ms for r in self.wrk50]),
            "rps10": median([r.rps for r in self.wrk10]),
            "rate2k": median([r.rps for r in self.hey2k]),
            "p50_2k": median([r.p50_ms for r in self.hey2k]),
            "p99_2k": median([r.p99_ms for r in self.hey2k]),
            "share": (rps50 / nginx_rps) if rps50 and nginx_rps else None,
            "us50": us,
            "cpushare": (nginx_us / us) if us and nginx_us else None,
            "non2xx": sum(r.non2xx for r in self.runs),
            "sockerr": sum(r.socket_error_total for r in self.runs),
            "foreign": max(
                (r.foreign_pct for r in self.runs if r.foreign_pct is not None), default=None
            ),
        }


def load_runs(raw: Path, name: str, kind: str, parse: Callable[[str], Run]) -> list[Run]:
    files = sorted(raw.glob(f"{name}.{kind}.*.txt"), key=lambda p: int(p.stem.rsplit(".", 1)[1]))
    out = []
    for f in files:
        run = parse(f.read_text(errors="replace"))
        for suffix, attr in ((".foreign", "foreign_pct"), (".cpu", "cpu_s")):
            side = f.with_suffix(suffix)
            if side.exists():
                with contextlib.suppress(ValueError):
                    setattr(run, attr, float(side.read_text().strip()))
        out.append(run)
    return out


def load(raw: Path, meta: dict[str, str]) -> list[Target]:
    targets = []
    for name in meta.get("TARGETS", "").split():
        status = raw / f"{name}.status"
        retries = raw / f"{name}.retries"
        notes = raw / f"{name}.notes"
        targets.append(
            Target(
                name=name,
                label=LABELS.get(name, name).format(**meta),
                wrk50=load_runs(raw, name, "wrk50", parse_wrk),
                wrk10=load_runs(raw, name, "wrk10", parse_wrk),
                hey2k=load_runs(raw, name, "hey2k", parse_hey),
                status=status.read_text().strip() if status.exists() else "",
                notes=notes.read_text().strip() if notes.exists() else "",
                retries=retries.read_text().strip() if retries.exists() else "",
            )
        )
    return targets


# ------------------------------------------------------------------ machine --


def _cmd(*argv: str) -> str:
    try:
        out = subprocess.run(argv, capture_output=True, text=True, timeout=10, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return "not found"
    text = (out.stdout + out.stderr).strip()
    return text.splitlines()[0] if text else "?"


def machine(potok_source: str | None = None) -> dict[str, str]:
    cpu = "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = "?"
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal"):
                mem = f"{int(line.split()[1]) / 1024 / 1024:.1f} GiB"
    except OSError:
        pass
    os_name = "?"
    try:
        for line in Path("/etc/os-release").read_text().splitlines():
            if line.startswith("PRETTY_NAME="):
                os_name = line.split("=", 1)[1].strip('"')
    except OSError:
        pass
    commit = _cmd("git", "-C", str(ROOT), "rev-parse", "--short", "HEAD")
    dirty = subprocess.run(
        ["git", "-C", str(ROOT), "status", "--porcelain", "--untracked-files=no", "--", "src"],
        capture_output=True,
        text=True,
        check=False,
    ).stdout.strip()
    potok = Path(sys.executable).parent / "potok"
    return {
        "Date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "CPU": cpu,
        "Cores": str(os.cpu_count()),
        "Memory": mem,
        "OS": os_name,
        "Kernel": platform.release(),
        "Python": f"{platform.python_version()} ({platform.python_implementation()})",
        "Potok": f"{_cmd(str(potok), '--version')}, "
        + (
            potok_source
            or f"working tree at {commit}" + (" + uncommitted changes in src/" if dirty else "")
        ),
        "nginx": _cmd("nginx", "-v").replace("nginx version: ", ""),
        "Caddy": _cmd("caddy", "version"),
        "wrk": _cmd("wrk", "-v").split(" Copyright")[0],
        "hey": "hey " + _cmd("dpkg-query", "-W", "-f", "${Version}", "hey") + " (Debian package)",
    }


# ------------------------------------------------------------------- output --


def _f(value: float | int | str | None, kind: str) -> str:
    if value is None:
        return "n/a"
    if kind == "rps":
        return f"{value:,.0f}"
    if kind == "ms":
        return f"{value:.2f}"
    if kind == "pct":
        return f"{value * 100:.0f} %"
    if kind == "us":
        return f"{value:.1f}"
    if kind == "pct1":
        return f"{value:.0f} %"
    return str(value)


COLUMNS = [
    ("Proxy", "label", "str"),
    ("req/s @50", "rps50", "rps"),
    ("p50 ms @50", "p50_50", "ms"),
    ("p99 ms @50", "p99_50", "ms"),
    ("req/s @10", "rps10", "rps"),
    ("p50 ms @2k/s", "p50_2k", "ms"),
    ("p99 ms @2k/s", "p99_2k", "ms"),
    ("achieved @2k", "rate2k", "rps"),
    ("share of nginx", "share", "pct"),
    ("CPU us/req @50", "us50", "us"),
    ("CPU eff. vs nginx", "cpushare", "pct"),
    ("non-2xx", "non2xx", "str"),
    ("socket errors", "sockerr", "str"),
    ("other CPU (max)", "foreign", "pct1"),
]


def table_rows(targets: list[Target]) -> list[dict]:
    nginx = next((t for t in targets if t.name == "nginx"), None)
    nginx_rps = nginx.rps50() if nginx else None
    nginx_us = nginx.us50() if nginx else None
    return [t.row(nginx_rps, nginx_us) for t in targets]


def text_table(rows: list[dict]) -> str:
    cells = [[h for h, _, _ in COLUMNS]] + [
        [_f(r[k], kind) for _, k, kind in COLUMNS] for r in rows
    ]
    widths = [max(len(row[i]) for row in cells) for i in range(len(COLUMNS))]
    lines = []
    for n, row in enumerate(cells):
        lines.append(
            "  ".join(
                c.ljust(w) if i == 0 else c.rjust(w)
                for i, (c, w) in enumerate(zip(row, widths, strict=True))
            )
        )
        if n == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def md_table(rows: list[dict]) -> str:
    head = "| " + " | ".join(h for h, _, _ in COLUMNS) + " |"
    sep = "|" + "|".join(":---" if i == 0 else "---:" for i in range(len(COLUMNS))) + "|"
    body = ["| " + " | ".join(_f(r[k], kind) for _, k, kind in COLUMNS) + " |" for r in rows]
    return "\n".join([head, sep, *body])


def targets_check(targets: list[Target], meta: dict[str, str]) -> list[str]:
    by = {t.name: t for t in targets}
    out: list[str] = []

    def share(name: str) -> float | None:
        if name in by and "nginx" in by and by[name].rps50() and by["nginx"].rps50():
            return by[name].rps50() / by["nginx"].rps50()
        return None

    def mark(ok: bool) -> str:
        return "MET" if ok else "NOT MET"

    if (s := share("potok")) is not None:
        out.append(f"Potok bare >= 40 % of nginx req/s @50: {s * 100:.1f} % -> {mark(s >= 0.40)}")
    if (s := share("potok-logged")) is not None:
        out.append(
            f"Potok + access log + metrics >= 32 % of nginx req/s @50: {s * 100:.1f} % -> {mark(s >= 0.32)}"
        )
    if "nginx" in by and by["nginx"].us50():
        for name in ("potok", "potok-logged"):
            if name in by and by[name].us50():
                out.append(
                    f"(for reference) {by[name].label} CPU per request vs nginx: "
                    f"{by[name].us50():.1f} vs {by['nginx'].us50():.1f} us -> "
                    f"{by['nginx'].us50() / by[name].us50() * 100:.1f} % of nginx's efficiency"
                )
    if "nginx" in by:
        ng = median([r.p99_ms for r in by["nginx"].hey2k])
        for name in ("potok", "potok-logged"):
            if name in by and ng is not None:
                p = median([r.p99_ms for r in by[name].hey2k])
                if p is not None:
                    d = p - ng
                    out.append(
                        f"{by[name].label}: p99 at 2,000 req/s within 0.5 ms of nginx: "
                        f"{p:.2f} vs {ng:.2f} ms ({d:+.2f} ms) -> {mark(d <= 0.5)}"
                    )
    for name, bound in (("potok-traced1", 0.03), ("potok-traced100", 0.15)):
        if name in by and "potok" in by and by[name].rps50() and by["potok"].rps50():
            cost = 1 - by[name].rps50() / by["potok"].rps50()
            out.append(
                f"{by[name].label}: req/s @50 at most {bound * 100:.0f} % below bare: "
                f"{cost * 100:+.1f} % -> {mark(cost <= bound)}"
            )
    if "potok" in by and "potok-w2" in by and by["potok"].rps50() and by["potok-w2"].rps50():
        ratio = by["potok-w2"].rps50() / by["potok"].rps50()
        out.append(
            f"Potok --workers 2 >= 1.6x one worker @50: {ratio:.2f}x -> {mark(ratio >= 1.6)} "
            f"(workers on cores {meta.get('W2_CPUS')}, sharing core {meta.get('LOAD_CPU')} with wrk "
            f"and the upstream: the load generator has no spare room here)"
        )
    return out


def noisy(targets: list[Target], threshold: float) -> list[str]:
    out = []
    for t in targets:
        for kind, runs in (("wrk -c50", t.wrk50), ("wrk -c10", t.wrk10), ("hey 2k/s", t.hey2k)):
            for i, r in enumerate(runs, 1):
                if r.foreign_pct is not None and r.foreign_pct >= threshold:
                    out.append(
                        f"{t.label}, {kind}, round {i}: other processes used {r.foreign_pct:.0f} % of the CPUs"
                    )
    return out


def problems(targets: list[Target]) -> list[str]:
    out = []
    for t in targets:
        if t.status:
            out.append(f"{t.label}: {t.status}")
        for kind, runs in (("wrk -c50", t.wrk50), ("wrk -c10", t.wrk10), ("hey 2k/s", t.hey2k)):
            for i, r in enumerate(runs, 1):
                if r.non2xx or r.socket_errors or r.error_lines:
                    bits = []
                    if r.non2xx:
                        bits.append(f"non-2xx {r.non2xx}")
                    if r.socket_errors and r.socket_error_total:
                        bits.append(
                            "socket errors "
                            + ", ".join(f"{k} {v}" for k, v in r.socket_errors.items() if v)
                        )
                    bits.extend(r.error_lines)
                    if bits:
                        out.append(f"{t.label}, {kind}, round {i}: " + "; ".join(bits))
    return out


def rounds_table(targets: list[Target]) -> str:
    lines = [
        "| Proxy | req/s @50 per round | CPU us/req @50 per round | req/s @10 per round | p99 ms @2k/s per round | other CPU % per run (@50, @10, @2k) |",
        "|:---|---:|---:|---:|---:|---:|",
    ]
    for t in targets:
        a = ", ".join(_f(r.rps, "rps") for r in t.wrk50)
        u = ", ".join(_f(r.us_per_req, "us") for r in t.wrk50)
        b = ", ".join(_f(r.rps, "rps") for r in t.wrk10)
        c = ", ".join(_f(r.p99_ms, "ms") for r in t.hey2k)
        d = " / ".join(
            ", ".join("n/a" if r.foreign_pct is None else f"{r.foreign_pct:.0f}" for r in runs)
            for runs in (t.wrk50, t.wrk10, t.hey2k)
        )
        lines.append(f"| {t.label} | {a} | {u} | {b} | {c} | {d} |")
    return "\n".join(lines)


def proxy_report(raw: Path, out: Path) -> int:
    meta = dict(
        line.split("=", 1) for line in (raw / "meta.env").read_text().splitlines() if "=" in line
    )
    targets = load(raw, meta)
    rows = table_rows(targets)
    mach = machine(meta.get("POTOK_SOURCE"))
    checks = targets_check(targets, meta)
    probs = problems(targets)
    threshold = float(meta.get("QUIET_THRESHOLD", "10"))
    noise = noisy(targets, threshold)
    setup = (
        f"{meta['ROUNDS']} round(s) x {meta['DURATION']} s per measurement (median shown), "
        f"{meta['WARMUP']} s warm-up; proxy on core {meta['PROXY_CPU']}, upstream nginx on core "
        f"{meta['UPSTREAM_CPU']}, wrk/hey on core {meta['LOAD_CPU']}"
        + (" — QUICK smoke run, not a measurement" if meta.get("QUICK") == "1" else "")
    )

    print()
    print(f"Proxy benchmark — {setup}")
    print(f"{mach['CPU']}, {mach['Cores']} cores, kernel {mach['Kernel']}, Python {mach['Python']}")
    print()
    print(text_table(rows))
    print()
    print(
        "@50 / @10: wrk -t1 -c50 / -c10 (closed loop, max throughput); @2k/s: hey -c 10 -q 200 (open-ish loop, fixed 2,000 req/s)"
    )
    print(
        "CPU us/req: CPU time of the server's process tree per request in the @50 runs; CPU eff. = nginx's us/req / this one"
    )
    for line in checks:
        print("  " + line)
    if probs:
        print("Errors seen:")
        for line in probs:
            print("  " + line)
    else:
        print("Errors seen: none (no non-2xx responses, no socket errors)")
    if noise:
        print(
            f"Noisy runs (other processes >= {threshold:.0f} % CPU; the numbers above are affected):"
        )
        for line in noise:
            print("  " + line)

    md = [
        "# Proxy benchmark (latest run)",
        "",
        "## Machine",
        "",
        *[f"- **{k}**: {v}" for k, v in mach.items()],
        "",
        "## Setup",
        "",
        f"- {setup}",
        "- Reproduce: `bench/proxy.sh` (`QUICK=1 bench/proxy.sh` for a smoke run)",
        "- `@50`, `@10`: `taskset -c 1 wrk -t1 -cN -dDs --latency`; `@2k/s`: `taskset -c 1 hey -z Ds -c 10 -q 200` (10 x 200 req/s)",
        "- hey reports latency with 0.1 ms resolution.",
        "- `CPU us/req @50`: CPU time (user+sys) of the server's whole process tree during the wrk -c50 runs,"
        " per request (for `upstream direct` it is the upstream nginx). `CPU eff. vs nginx` = nginx's us/req"
        " divided by this one: how far each proxy is from nginx per unit of work, even when nginx is held"
        " back by the load generator rather than by its own CPU.",
        "",
        "## Results",
        "",
        md_table(rows),
        "",
        "### Per round",
        "",
        rounds_table(targets),
        "",
        "## Targets",
        "",
        *[f"- {line}" for line in checks],
        "",
        "## Errors",
        "",
        *(
            [f"- {line}" for line in probs]
            or ["- none: no non-2xx responses and no socket errors in any run"]
        ),
        "",
        "## Background load",
        "",
        "`other CPU` is CPU time used by processes outside the benchmark's process tree during a run,",
        "as % of all cores (bench/cpuwatch.py). Above a few % the run is disturbed.",
        "",
        *(
            [f"- kept although disturbed: {line}" for line in noise]
            or [f"- every kept run had other processes below {threshold:.0f} % CPU"]
        ),
        "",
        f"Disturbed runs were redone up to {meta.get('RETRIES', '?')} times; "
        f"{meta.get('NOISE_SPENT', '?')} s of the {meta.get('NOISE_BUDGET', '?')} s budget for waiting and redoing was used.",
        "",
        *[f"- redone: {t.label}: {line}" for t in targets for line in t.retries.splitlines()],
        "",
    ]
    notes = [t for t in targets if t.notes]
    if notes:
        md += ["## Notes from the run", ""]
        for t in notes:
            md += [f"**{t.label}**", "", "```", t.notes, "```", ""]
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(md))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("proxy", help="table from bench/proxy.sh raw outputs")
    p.add_argument("--raw", type=Path, required=True)
    p.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    return proxy_report(args.raw, args.out)


if __name__ == "__main__":
    raise SystemExit(main())
