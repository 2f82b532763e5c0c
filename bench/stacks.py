"""Summarise py-spy collapsed stacks (`py-spy record --format raw`), stdlib only.

    python bench/stacks.py bench/results/profile-latest.collapsed.txt [--top 25]
        [--markdown out.md] [--speedscope out.speedscope.json]

Each input line is `frame;frame;...;leaf COUNT`, a frame being
`function (file:line)`. Functions are keyed by `function (file)` (line numbers
dropped, so one function is one row). Own time is the samples where the
function is the leaf; total time is the samples where it is anywhere on the
stack (counted once per sample even when recursive).
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections import Counter
from pathlib import Path

_FRAME = re.compile(r"^(?P<func>.*?) \((?P<file>.*?)(?::(?P<line>\d+))?\)$")
_SITE = re.compile(r".*/(?:site-packages|lib/python3\.\d+)/")


def short_file(path: str) -> str:
    """Trim site-packages / stdlib prefixes so rows stay readable."""
    path = _SITE.sub("", path)
    if "/src/potok/" in path:
        path = "potok/" + path.split("/src/potok/", 1)[1]
    return path


def frame_key(frame: str) -> str:
    m = _FRAME.match(frame)
    if not m:
        return frame
    return f"{m.group('func')} ({short_file(m.group('file'))})"


def frame_file(frame: str) -> str:
    m = _FRAME.match(frame)
    return short_file(m.group("file")) if m else frame


def parse(text: str) -> list[tuple[list[str], int]]:
    stacks = []
    for raw_line in text.splitlines():
        line = raw_line.rstrip()
        if not line:
            continue
        stack, _, count = line.rpartition(" ")
        try:
            n = int(count)
        except ValueError:
            continue
        frames = [f for f in stack.split(";") if f]
        # --threads / --subprocesses add pseudo-frames; they are not functions.
        frames = [f for f in frames if not f.startswith(("process ", "thread "))]
        if frames:
            stacks.append((frames, n))
    return stacks


def summarise(stacks: list[tuple[list[str], int]]) -> tuple[int, Counter, Counter, Counter]:
    total = sum(n for _, n in stacks)
    own: Counter = Counter()
    incl: Counter = Counter()
    by_file: Counter = Counter()
    for frames, n in stacks:
        own[frame_key(frames[-1])] += n
        by_file[frame_file(frames[-1])] += n
        for key in {frame_key(f) for f in frames}:
            incl[key] += n
    return total, own, incl, by_file


def render(total: int, own: Counter, incl: Counter, by_file: Counter, top: int) -> str:
    def block(title: str, counter: Counter, n: int) -> list[str]:
        lines = [title, f"{'samples':>8}  {'share':>6}  function (file)"]
        for key, count in counter.most_common(n):
            lines.append(f"{count:>8}  {count / total * 100:5.1f}%  {key}")
        return lines

    out = [f"{total} samples (non-idle)", ""]
    out += block(f"Top {top} by own time (leaf frames)", own, top)
    out += [""]
    out += block(f"Top {top} by total time (anywhere on the stack)", incl, top)
    out += [""]
    out += block("Own time by file (top 15)", by_file, 15)
    return "\n".join(out)


def speedscope(stacks: list[tuple[list[str], int]], name: str) -> dict:
    index: dict[str, int] = {}
    frames: list[dict] = []
    samples, weights = [], []
    for stack, n in stacks:
        ids = []
        for f in stack:
            if f not in index:
                index[f] = len(frames)
                m = _FRAME.match(f)
                if m:
                    entry = {"name": m.group("func"), "file": m.group("file")}
                    if m.group("line"):
                        entry["line"] = int(m.group("line"))
                else:
                    entry = {"name": f}
                frames.append(entry)
            ids.append(index[f])
        samples.append(ids)
        weights.append(n)
    return {
        "$schema": "https://www.speedscope.app/file-format-schema.json",
        "shared": {"frames": frames},
        "profiles": [
            {
                "type": "sampled",
                "name": name,
                "unit": "none",
                "startValue": 0,
                "endValue": sum(weights),
                "samples": samples,
                "weights": weights,
            }
        ],
        "name": name,
        "exporter": "bench/stacks.py",
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("collapsed", type=Path)
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument(
        "--markdown", type=Path, help="also write the summary here (in a code block)"
    )
    parser.add_argument(
        "--speedscope", type=Path, help="also write the samples as a speedscope JSON file"
    )
    args = parser.parse_args(argv)

    stacks = parse(args.collapsed.read_text(errors="replace"))
    if not stacks:
        print(f"{args.collapsed}: no samples", file=sys.stderr)
        return 1
    total, own, incl, by_file = summarise(stacks)
    text = render(total, own, incl, by_file, args.top)
    print(text)
    if args.markdown:
        args.markdown.write_text(f"```\n{text}\n```\n")
    if args.speedscope:
        args.speedscope.write_text(json.dumps(speedscope(stacks, args.collapsed.name)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
