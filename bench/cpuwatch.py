"""How busy is the machine with work that is not ours? (stdlib only, Linux /proc)

The benchmark shares a 2-core machine with whatever else runs there (test
suites, editors, daemons). This measures the CPU used by processes outside
the benchmark's own process tree, so a noisy result can be told apart:

    python bench/cpuwatch.py snapshot ROOTPID > before.json
    ... run the load ...
    python bench/cpuwatch.py snapshot ROOTPID > after.json
    python bench/cpuwatch.py foreign before.json after.json   # -> "12.3" (% of all cores)
    python bench/cpuwatch.py quiet ROOTPID --threshold 10 --max-wait 30

With `snapshot ROOTPID --proc PID`, the snapshot also holds the CPU time of
the PID process tree (the server under test), and `proc-seconds before after`
prints how many CPU seconds that tree used in between.

"Ours" is ROOTPID and every live descendant (utime+stime), plus the CPU time of
descendants already reaped (cutime+cstime), so wrk/hey runs that have exited
still count as ours.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

TICK = os.sysconf("SC_CLK_TCK")


def _stat(pid: str) -> tuple[int, int] | None:
    """(ppid, utime+stime+cutime+cstime) of one process, or None if it is gone."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    rest = text.rsplit(")", 1)[1].split()
    return int(rest[1]), sum(int(x) for x in rest[11:15])


def _procs() -> dict[int, tuple[int, int]]:
    procs: dict[int, tuple[int, int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit() and (st := _stat(entry)) is not None:
            procs[int(entry)] = st
    return procs


def ours(root: int, procs: dict[int, tuple[int, int]] | None = None) -> int:
    """CPU ticks of root and all its live descendants (and their reaped children)."""
    procs = _procs() if procs is None else procs
    children: dict[int, list[int]] = {}
    for pid, (ppid, _) in procs.items():
        children.setdefault(ppid, []).append(pid)
    total, todo, seen = 0, [root], set()
    while todo:
        pid = todo.pop()
        if pid in seen or pid not in procs:
            continue
        seen.add(pid)
        total += procs[pid][1]
        todo.extend(children.get(pid, []))
    return total


def machine_busy() -> int:
    fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(x) for x in fields[:8])
    return user + nice + system + irq + softirq + steal


def snapshot(root: int, proc: int | None = None) -> dict[str, float]:
    # Our own process is a descendant of root too; its tiny start-up cost is counted as ours.
    procs = _procs()
    snap = {"t": time.monotonic(), "busy": machine_busy(), "ours": ours(root, procs)}
    if proc is not None:
        snap["proc"] = ours(proc, procs)
    return snap


def foreign_pct(a: dict[str, float], b: dict[str, float]) -> float:
    wall = b["t"] - a["t"]
    if wall <= 0:
        return 0.0
    other = (b["busy"] - a["busy"]) - (b["ours"] - a["ours"])
    return max(0.0, other / TICK / wall / (os.cpu_count() or 1) * 100.0)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="command", required=True)
    s = sub.add_parser("snapshot")
    s.add_argument("root", type=int)
    s.add_argument(
        "--proc",
        type=int,
        help="also count the CPU time of this process tree (the server under test)",
    )
    c = sub.add_parser(
        "proc-seconds", help="CPU seconds the --proc tree used between two snapshots"
    )
    c.add_argument("before", type=Path)
    c.add_argument("after", type=Path)
    f = sub.add_parser("foreign")
    f.add_argument("before", type=Path)
    f.add_argument("after", type=Path)
    q = sub.add_parser("quiet", help="wait (bounded) until other processes use < threshold %% CPU")
    q.add_argument("root", type=int)
    q.add_argument("--threshold", type=float, default=10.0)
    q.add_argument("--max-wait", type=float, default=30.0)
    args = parser.parse_args(argv)

    if args.command == "snapshot":
        print(json.dumps(snapshot(args.root, args.proc)))
    elif args.command == "proc-seconds":
        a = json.loads(args.before.read_text())
        b = json.loads(args.after.read_text())
        print(f"{(b['proc'] - a['proc']) / TICK:.3f}")
    elif args.command == "foreign":
        a = json.loads(args.before.read_text())
        b = json.loads(args.after.read_text())
        print(f"{foreign_pct(a, b):.1f}")
    else:
        deadline = time.monotonic() + args.max_wait
        while True:
            a = snapshot(args.root)
            time.sleep(1.0)
            pct = foreign_pct(a, snapshot(args.root))
            if pct < args.threshold or time.monotonic() >= deadline:
                print(f"{pct:.1f}")
                return 0
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
