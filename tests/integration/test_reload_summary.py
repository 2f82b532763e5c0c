"""The `config reloaded` line names what changed: routes, services and policies (global and
the own API's) added, removed and changed."""

from __future__ import annotations

import json
import signal
from typing import Any

from tests.support.gateway import GatewayProcess


def gateway_config(**overrides: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "services": {"kept": {"targets": ["http://127.0.0.1:9"]}},
        "routes": [
            {"name": "stays", "match": {"prefix": "/stays"}, "service": "kept"},
            {"name": "goes", "match": {"prefix": "/goes"}, "service": "kept"},
            {"name": "edited", "match": {"prefix": "/edited"}, "service": "kept"},
        ],
        "policies": {"request_size": {"max_bytes": "1MiB"}, "cors": {"allow_origins": ["*"]}},
        "logging": {"level": "info"},
    }
    return base | overrides


def test_the_reload_line_lists_what_changed():
    gateway = GatewayProcess(gateway_config())
    try:
        new = gateway_config(
            services={
                "kept": {"targets": ["http://127.0.0.1:9"]},
                "fresh": {"targets": ["http://127.0.0.1:10"]},
            },
            routes=[
                {"name": "stays", "match": {"prefix": "/stays"}, "service": "kept"},
                {"name": "edited", "match": {"prefix": "/edited"}, "service": "fresh"},
                {"name": "arrives", "match": {"prefix": "/arrives"}, "service": "kept"},
            ],
            policies={
                "request_size": {"max_bytes": "2MiB"},
                "rate_limit": {"limit": 100, "window": "1m"},
            },
            api={"policies": {"rate_limit": {"limit": 10, "window": "1m"}}},
        )
        gateway.write_config(new)
        gateway.signal(signal.SIGHUP)
        gateway.wait_for(lambda: '"config reloaded"' in gateway.stderr(), timeout=10)
    finally:
        gateway.stop()
    line = next(
        json.loads(text) for text in gateway.stderr().splitlines() if '"config reloaded"' in text
    )
    assert line["routes_added"] == ["arrives"]
    assert line["routes_removed"] == ["goes"]
    assert line["routes_changed"] == ["edited"]
    assert line["services_added"] == ["fresh"]
    assert line["services_removed"] == [] and line["services_changed"] == []
    assert line["policies_added"] == ["api.rate_limit", "rate_limit"]
    assert line["policies_removed"] == ["cors"]
    assert line["policies_changed"] == ["request_size"]
