"""Checks that the lock (requirements/*.txt) matches pyproject.toml.

`python requirements/check.py` fails, naming the difference, when pyproject.toml's
dependencies changed since requirements/update last ran, or a pin falls outside its
range; `--digest` prints the fingerprint of the declarations the lock was made from.
"""

from __future__ import annotations

import hashlib
import json
import re
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LOCKS = {"runtime.txt": ("dependencies", "build"), "dev.txt": ("dependencies", "build", "dev")}
PIN = re.compile(r"^([A-Za-z0-9._-]+)==([^ ;\\]+)", re.MULTILINE)


def declared() -> dict[str, list[str]]:
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    return {
        "requires-python": [pyproject["project"]["requires-python"]],
        "dependencies": pyproject["project"]["dependencies"],
        "build": pyproject["build-system"]["requires"],
        "dev": pyproject.get("dependency-groups", {}).get("dev", []),
    }


def digest() -> str:
    return hashlib.sha256(json.dumps(declared(), sort_keys=True).encode()).hexdigest()[:16]


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def problems() -> list[str]:
    try:
        from packaging.requirements import Requirement
    except ImportError:  # a bare interpreter: pip carries a copy
        from pip._vendor.packaging.requirements import Requirement

    found: list[str] = []
    want = digest()
    for lock_name, sections in LOCKS.items():
        text = (ROOT / "requirements" / lock_name).read_text()
        stamp = re.search(r"^# pyproject-digest: (\w+)$", text, re.MULTILINE)
        if stamp is None or stamp.group(1) != want:
            found.append(f"requirements/{lock_name}: made from another pyproject.toml; run requirements/update")
        pins = {canonical(name): version for name, version in PIN.findall(text)}
        for section in sections:
            for line in declared()[section]:
                requirement = Requirement(line)
                pinned = pins.get(canonical(requirement.name))
                if pinned is None:
                    found.append(f"requirements/{lock_name}: {requirement.name} is not locked")
                elif not requirement.specifier.contains(pinned, prereleases=True):
                    found.append(f"requirements/{lock_name}: {requirement.name}=={pinned} is outside {requirement.specifier}")
    return found


def main() -> int:
    if sys.argv[1:] == ["--digest"]:
        print(digest())
        return 0
    found = problems()
    for problem in found:
        print(problem, file=sys.stderr)
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
