"""The README's commands work as printed after its own install step."""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text()


def section_commands(heading: str) -> list[list[str]]:
    section = README.split(f"## {heading}", 1)[1].split("\n## ", 1)[0]
    block = re.search(r"```sh\n(.*?)```", section, re.S)
    assert block, heading
    return [
        shlex.split(line.split("  #", 1)[0].replace("[", "").replace("]", ""))
        for line in block.group(1).splitlines()
        if line.strip()
    ]


def test_the_install_step_makes_the_potok_the_readme_calls():
    install = README.split("```sh\n", 1)[1].split("```", 1)[0]
    assert install.startswith("python3 -m venv .venv ")
    assert ".venv/bin/pip install --no-deps --no-build-isolation -e ." in install
    assert 'potok = "potok.cli.main:main"' in (ROOT / "pyproject.toml").read_text()


def test_running_it_for_real_calls_the_venvs_potok_and_real_subcommands():
    """It used to call a bare `potok`, which the install step does not put on PATH."""
    commands = section_commands("Running it for real")
    assert len(commands) >= 4
    for words in commands:
        assert words[0] == ".venv/bin/potok", words
        result = subprocess.run(
            [sys.executable, "-m", "potok", words[1], "--help"],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert result.returncode == 0, (words, result.stderr)
        for flag in (w for w in words[2:] if w.startswith("--")):
            assert flag in result.stdout, (words[1], flag)
