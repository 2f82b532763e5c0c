"""A policy from another package: tests/fixtures/sample_policy/ is built and installed
(pip, no network) into a temporary directory that only the gateway's processes see on
PYTHONPATH, found through the `potok.policies` entry point group, configured under its
name, validated by its own model, hot-reloaded, and refused when its name is taken."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from tests.integration.test_reload import sighup_and_wait
from tests.support.gateway import GatewayProcess
from tests.support.net import request

SAMPLE = Path(__file__).resolve().parents[1] / "fixtures" / "sample_policy"


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The sample package installed where only processes given this path find it (not the
    test venv itself: other tests' gateways and `potok config-docs` must not see it)."""
    root = tmp_path_factory.mktemp("plugin")
    source = root / "source"  # a copy: the build writes build/ and *.egg-info beside it
    shutil.copytree(SAMPLE, source)
    target = root / "site"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation",
         "--no-index", "--target", str(target), str(source)],
        check=True, capture_output=True, timeout=120,
    )  # fmt: skip
    assert (target / "potok_sample_policy-0.1.0.dist-info" / "entry_points.txt").is_file()
    yield target
    shutil.rmtree(root)


def config(upstream_url: str, value: str = "route") -> dict:
    return {
        "services": {"up": {"targets": [upstream_url]}},
        "routes": [
            {"name": "short", "match": {"prefix": "/short"}, "service": "up",
             "policies": {"sample_stamp": {"value": value, "limit": 20}}},
            {"name": "all", "match": {"prefix": "/"}, "service": "up"},
        ],
        "policies": {"sample_stamp": {"value": "global"}},
        "api": {"policies": {"sample_stamp": {"value": "api"}}},
    }  # fmt: skip


@pytest.fixture(scope="module")
def gateway(upstream, site):
    process = GatewayProcess(config(upstream.url), env={"PYTHONPATH": str(site)})
    yield process
    process.stop()


def potok(*args: str, path: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "potok", *args],
        check=False, capture_output=True, text=True, timeout=60,
        env={**os.environ, "PYTHONPATH": path},
    )  # fmt: skip


def test_the_plugin_stamps_its_routes_and_the_inheriting_ones(gateway):
    assert request(gateway.port, "GET", "/short/echo").header("X-Sample-Stamp") == "route"
    assert request(gateway.port, "GET", "/echo").header("X-Sample-Stamp") == "global"


def test_its_refusal_is_a_problem_that_carries_its_own_stamp(gateway, upstream):
    before = sum(upstream.hits.values())
    refused = request(gateway.port, "GET", "/short/" + "x" * 30)
    assert refused.status == 414
    assert refused.header("Content-Type") == "application/problem+json"
    assert refused.header("X-Sample-Stamp") == "route"
    assert sum(upstream.hits.values()) == before


def test_the_own_api_takes_it_because_its_entry_says_so_but_probes_do_not(gateway):
    assert request(gateway.port, "GET", "/api/openapi.json").header("X-Sample-Stamp") == "api"
    assert request(gateway.port, "GET", "/api/v1/health").header("X-Sample-Stamp") is None


def test_it_is_hot_reloaded_like_a_built_in(gateway, upstream):
    gateway.write_config(config(upstream.url, value="reloaded"))
    try:
        sighup_and_wait(gateway)
        assert request(gateway.port, "GET", "/short/echo").header("X-Sample-Stamp") == "reloaded"
    finally:
        gateway.write_config(config(upstream.url))
        gateway.signal(signal.SIGHUP)


def test_its_own_model_and_check_name_the_field(tmp_path, upstream, site):
    cfg = config(upstream.url)
    cfg["routes"][0]["policies"]["sample_stamp"]["limit"] = 0
    path = tmp_path / "potok.yaml"
    path.write_text(yaml.safe_dump(cfg))
    result = potok("check", "--config", str(path), path=str(site))
    assert result.returncode == 1
    assert "routes[0].policies.sample_stamp.limit: Input should be greater than 0" in result.stderr
    cfg["routes"][0]["policies"]["sample_stamp"]["limit"] = 3  # shorter than /short
    path.write_text(yaml.safe_dump(cfg))
    result = potok("check", "--config", str(path), path=str(site))
    assert result.returncode == 1
    assert (
        "routes[0].policies.sample_stamp.limit: routes[0] matches only paths longer than 3"
        in result.stderr
    )


def test_without_the_package_the_key_is_unknown(tmp_path, upstream):
    path = tmp_path / "potok.yaml"
    path.write_text(yaml.safe_dump(config(upstream.url)))
    result = potok("check", "--config", str(path), path="")
    assert result.returncode == 1
    assert "policies.sample_stamp: unknown field" in result.stderr


def fake_distribution(where: Path, name: str, module: str, code: str, points: str) -> Path:
    """A package as pip would leave it for importlib.metadata: a module and a .dist-info."""
    where.mkdir()
    (where / f"{module}.py").write_text(code)
    info = where / f"{name.replace('-', '_')}-0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 0\n")
    (info / "entry_points.txt").write_text(f"[potok.policies]\n{points}\n")
    return where


@pytest.mark.parametrize(
    ("points", "message"),
    [
        (
            "cors = clash_policy:CORS",
            "potok: policy plugin 'cors' (clash_policy:CORS of clash-policy 0) has the name "
            "of a built-in policy: rename it",
        ),
        ("sample_stamp = potok_sample_policy:ENTRY", "both offer a policy named 'sample_stamp'"),
        ("stamp = potok_sample_policy:ENTRY", "is a policy named 'sample_stamp'; name the entry"),
        ("broken = clash_policy:MISSING", "policy plugin 'broken' (clash_policy:MISSING of "),
    ],
)
def test_a_name_clash_or_a_broken_plugin_stops_the_gateway(tmp_path, site, points, message):
    code = "import dataclasses, potok_sample_policy as s\n"
    code += "CORS = dataclasses.replace(s.ENTRY, name='cors')\n"
    other = fake_distribution(tmp_path / "clash", "clash-policy", "clash_policy", code, points)
    result = potok("routes", "--config", "unused.yaml", path=f"{site}{os.pathsep}{other}")
    assert result.returncode == 2
    assert message in result.stderr
    assert "Traceback" not in result.stderr
