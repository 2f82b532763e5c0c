"""`potok demo`: three small example services and a gateway config in front of them.

Everything here ships with the package, so `potok demo` works from any install.
"""

from __future__ import annotations

from importlib import resources
from importlib.abc import Traversable

DEMO_CONFIG_NAME = "potok-demo.yaml"


def demo_config_resource() -> Traversable:
    """The packaged demo config (use `importlib.resources.as_file` for a real path)."""
    return resources.files(__name__) / DEMO_CONFIG_NAME
