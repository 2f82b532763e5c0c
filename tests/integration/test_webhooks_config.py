"""`potok check` on webhook configs: a source without a secret, a forwarding source without
Potok's signing secret, an unknown service, a lease shorter than a send — each names its
field and the gateway refuses to start with it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support.webhooks import POTOK_SECRET, SW_SECRET

BASE: dict[str, Any] = {"services": {"tasks": {"targets": ["http://127.0.0.1:9"]}}}


def check(tmp_path: Path, webhooks: dict[str, Any]) -> subprocess.CompletedProcess[str]:
    path = tmp_path / "potok.yaml"
    path.write_text(yaml.safe_dump({**BASE, "webhooks": webhooks}))
    return subprocess.run(
        [sys.executable, "-m", "potok", "check", "--config", str(path)],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip


@pytest.mark.parametrize(
    ("webhooks", "expected"),
    [
        (
            {"sources": {"max": {"preset": "max_bot", "service": "tasks",
                                 "path": "/api/v1/bot/webhook"}}},
            ["webhooks.sources.max", "secrets: a source needs at least one secret"],
        ),
        (
            {"sources": {"gh": {"preset": "github", "secrets": ["x" * 20], "service": "tasks"}}},
            ["webhooks.delivery.signing_secret", "required"],
        ),
        (
            {"delivery": {"signing_secret": POTOK_SECRET},
             "sources": {"sw": {"secrets": [SW_SECRET], "service": "nope"}}},
            ["webhooks.sources.sw.service", "no service named 'nope'"],
        ),
        (
            {"delivery": {"signing_secret": POTOK_SECRET, "timeout": "30s"},
             "outbox": {"lease": "30s"},
             "sources": {"sw": {"secrets": [SW_SECRET], "service": "tasks"}}},
            ["outbox.lease", "twice"],
        ),
        (
            {"sources": {"sw": {"secrets": ["whsec_c2hvcnQ="], "publish": True}}},
            ["secrets[0]", "at least 16"],
        ),
    ],
    ids=["no-secret", "no-signing-secret", "unknown-service", "short-lease", "short-key"],
)  # fmt: skip
def test_check_names_the_field(
    tmp_path: Path, webhooks: dict[str, Any], expected: list[str]
) -> None:
    result = check(tmp_path, webhooks)
    assert result.returncode != 0
    for text in expected:
        assert text in result.stderr + result.stdout, result.stderr


def test_a_good_config_passes(tmp_path: Path) -> None:
    result = check(
        tmp_path,
        {"delivery": {"signing_secret": POTOK_SECRET},
         "sources": {"max": {"preset": "max_bot", "secrets": ["m" * 20], "service": "tasks",
                             "path": "/api/v1/bot/webhook"}}},
    )  # fmt: skip
    assert result.returncode == 0, result.stderr


def test_an_alias_may_not_take_a_route_path(tmp_path: Path) -> None:
    path = tmp_path / "potok.yaml"
    config = {
        **BASE,
        "routes": [{"match": {"path": "/api/v1/bot/webhook"}, "service": "tasks"}],
        "webhooks": {
            "delivery": {"signing_secret": POTOK_SECRET},
            "sources": {"max": {"preset": "max_bot", "secrets": ["m" * 20], "service": "tasks",
                                "path": "/api/v1/bot/webhook"}},
        },
    }  # fmt: skip
    path.write_text(yaml.safe_dump(config))
    result = subprocess.run(
        [sys.executable, "-m", "potok", "check", "--config", str(path)],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert result.returncode != 0
    assert "webhooks.sources.max.path" in result.stderr + result.stdout
