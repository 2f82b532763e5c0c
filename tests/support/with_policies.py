"""Run `potok` with more built-in policies, as if each had its line in `BUILT_IN`
(policies/registry.py), without editing a file of the package:

    python -m tests.support.with_policies MODULE:ATTR ... -- [PYTHON -m potok] ARGS

Everything after `--` up to `potok` is skipped, so the command line `GatewayProcess`
builds after its `command_prefix` works as it is. The registry is replaced before the
config models are generated from it, in this process (workers fork from it).
"""

from __future__ import annotations

import importlib
import sys


def main(argv: list[str]) -> int:
    split = argv.index("--")
    specs, command = argv[:split], argv[split + 1 :]
    if "potok" in command:
        command = command[command.index("potok") + 1 :]
    from potok.policies import registry

    # Too late once the models exist: they were generated from the registry as it was.
    assert "potok.policies.config" not in sys.modules, "the config models are already built"
    added = []
    for spec in specs:
        module, _, attribute = spec.partition(":")
        added.append(getattr(importlib.import_module(module), attribute))
    registry.BUILT_IN = (*registry.BUILT_IN, *added)
    registry.REGISTRY = registry.with_plugins(registry.BUILT_IN)
    from potok.cli.main import main as potok_main

    return potok_main(command)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
