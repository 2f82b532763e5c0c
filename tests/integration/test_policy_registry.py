"""Adding a policy is its folder and one registry line: the `dummy` policy
(tests/support/dummy_policy/) in a temporary registry, through a real gateway, with no
other file edited — its config field, pipeline place, consumed header and check all come
from its entry."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.support.gateway import GatewayProcess
from tests.support.net import request

REPO = Path(__file__).resolve().parents[2]
DUMMY = "tests.support.dummy_policy.entry:ENTRY"
WITH_DUMMY = [sys.executable, "-m", "tests.support.with_policies", DUMMY, "--"]
ENV = {"PYTHONPATH": str(REPO)}


def config(upstream_url: str) -> dict:
    return {
        "services": {"up": {"targets": [upstream_url]}},
        "routes": [
            {"name": "own", "match": {"prefix": "/own"}, "service": "up",
             "policies": {"dummy": {"value": "mine", "token_header": "X-Dummy-Token"},
                          "authorize": {"authenticated": True}}},
            {"name": "inherits", "match": {"prefix": "/"}, "service": "up"},
        ],
        "policies": {"dummy": {"value": "global"}},
    }  # fmt: skip


@pytest.fixture(scope="module")
def gateway(upstream):
    process = GatewayProcess(config(upstream.url), command_prefix=WITH_DUMMY, env=ENV)
    yield process
    process.stop()


def potok(*args: str, registry: list[str] = WITH_DUMMY) -> subprocess.CompletedProcess[str]:
    command = [*registry, sys.executable, "-m", "potok", *args]
    env = {**os.environ, **ENV}
    return subprocess.run(
        command, check=False, capture_output=True, text=True, timeout=60, env=env, cwd=REPO
    )


def test_the_dummy_stamps_answers_of_its_routes_and_inherited_ones(gateway):
    inherited = request(gateway.port, "GET", "/echo")
    assert inherited.status == 200
    assert inherited.header("X-Dummy") == "global; route=inherits"


def test_its_response_hook_shapes_refusals_too_and_its_header_is_consumed(gateway, upstream):
    refused = request(gateway.port, "GET", "/own/echo", headers={"X-Dummy-Token": "t"})
    assert refused.status == 401  # authorize (rank 10) before the dummy (20)
    assert refused.header("X-Dummy") == "mine; route=own"


def test_a_consumed_header_is_not_forwarded(tmp_path, upstream):
    cfg = config(upstream.url)
    del cfg["routes"][0]["policies"]["authorize"]
    process = GatewayProcess(cfg, command_prefix=WITH_DUMMY, env=ENV)
    try:
        answer = request(
            process.port,
            "GET",
            "/own/echo",
            headers={"X-Dummy-Token": "secret", "X_Dummy_Token": "twin", "X-Other": "kept"},
        )
    finally:
        process.stop()
    assert answer.status == 200
    seen = {name.lower() for name, _ in answer.json()["headers"]}
    assert "x-other" in seen
    assert not seen & {"x-dummy-token", "x_dummy_token"}


def test_its_place_in_the_pipeline_is_its_stage_and_rank(tmp_path, upstream):
    path = tmp_path / "potok.yaml"
    path.write_text(yaml.safe_dump(config(upstream.url)))
    result = potok("routes", "--config", str(path))
    assert result.returncode == 0, result.stderr
    own = next(line for line in result.stdout.splitlines() if line.startswith("own "))
    assert own.split()[-1] == "request_size,authorize,dummy"


def test_its_check_and_its_model_judge_the_file(tmp_path, upstream):
    cfg = config(upstream.url)
    cfg["routes"][1].pop("name")  # the global dummy applies to it: it needs a name
    cfg["api"] = {"policies": {"dummy": {"value": "x"}}}  # not own_api: not accepted there
    cfg["routes"][0]["policies"]["dummy"] = {"value": ""}
    path = tmp_path / "potok.yaml"
    path.write_text(yaml.safe_dump(cfg))
    result = potok("check", "--config", str(path))
    assert result.returncode == 1
    assert "api.policies.dummy: unknown field" in result.stderr
    assert "routes[0].policies.dummy.value" in result.stderr
    del cfg["api"]
    cfg["routes"][0]["policies"]["dummy"] = {"value": "ok"}
    path.write_text(yaml.safe_dump(cfg))
    result = potok("check", "--config", str(path))
    assert result.returncode == 1
    assert "routes[1].name: the dummy policy stamps the route's name" in result.stderr


def test_without_its_line_the_registry_does_not_know_it(tmp_path, upstream):
    path = tmp_path / "potok.yaml"
    path.write_text(yaml.safe_dump(config(upstream.url)))
    result = potok("check", "--config", str(path), registry=[])
    assert result.returncode == 1
    assert "policies.dummy: unknown field" in result.stderr
