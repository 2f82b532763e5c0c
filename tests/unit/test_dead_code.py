"""No dead code in the package: every module is reachable from an entry point, and every
public class of `potok.errors` is used somewhere else."""

from __future__ import annotations

import ast
import re
from pathlib import Path

SRC = Path(__file__).resolve().parents[2] / "src"
PACKAGE = SRC / "potok"
ENTRY_POINTS = ("potok.__main__", "potok.cli.main", "potok.demo.services.__main__")
# Built and tested ahead of the code that will import it; remove the entry when it does.
NOT_WIRED_YET: dict[str, str] = {}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


MODULES = {module_name(path): path for path in PACKAGE.rglob("*.py")}


def imported_by(name: str) -> set[str]:
    """Modules of the package that `name` imports (a package's __init__ included)."""
    tree = ast.parse(MODULES[name].read_text())
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            targets = [node.module, *(f"{node.module}.{alias.name}" for alias in node.names)]
        else:
            continue
        for target in targets:
            parts = target.split(".")
            for end in range(1, len(parts) + 1):  # importing a.b.c runs a and a.b too
                prefix = ".".join(parts[:end])
                if prefix in MODULES:
                    found.add(prefix)
    return found


def test_every_module_is_reachable_from_an_entry_point():
    seen: set[str] = set()
    todo = list(ENTRY_POINTS)
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        todo.extend(imported_by(name) - seen)
    assert sorted(set(MODULES) - seen - set(NOT_WIRED_YET)) == []
    # No stale entry: the module exists and nothing imports it yet.
    assert sorted(set(NOT_WIRED_YET) - set(MODULES)) == []
    assert sorted(set(NOT_WIRED_YET) & seen) == []


def test_every_error_class_is_used():
    errors = (PACKAGE / "errors.py").read_text()
    classes = re.findall(r"^class (\w+)\(", errors, re.M)
    others = "\n".join(
        path.read_text() for path in PACKAGE.rglob("*.py") if path.name != "errors.py" or
        path.parent != PACKAGE
    )  # fmt: skip
    unused = [name for name in classes if not re.search(rf"\b{name}\b", others)]
    # routing.table has its own MethodNotAllowed (a match result): a name in use elsewhere
    # does not mean errors.py's class is; check the imports too.
    imported = set(re.findall(r"from potok\.errors import ([\w, ]+)", others))
    names = {n.strip() for group in imported for n in group.split(",")}
    assert unused == [] and set(classes) - names <= {"GatewayError"}, (unused, names)
