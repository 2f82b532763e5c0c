"""The `potok` command, run as a real subprocess: check, routes, config-docs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]

SERVICES = {
    "users": {"targets": ["http://127.0.0.1:9001"]},
    "macro": {"targets": ["http://127.0.0.1:9002", {"url": "http://127.0.0.1:9003", "weight": 2}]},
}
ROUTES = [
    {"name": "catch-all", "match": {"prefix": "/"}, "service": "users"},
    {"name": "macro", "match": {"prefix": "/api/macro"}, "service": "macro", "rewrite": "/v1"},
    {
        "name": "user",
        "match": {"path": "/users/{id}", "methods": ["GET", "DELETE"]},
        "service": "users",
        "rewrite": "/v2/users/{id}",
    },
    {"name": "me", "match": {"path": "/users/me"}, "service": "users"},
    {"name": "strip", "match": {"prefix": "/s"}, "service": "users", "strip_prefix": True},
    {"name": "host", "match": {"prefix": "/", "host": "*.example.com"}, "service": "macro"},
    {"name": "root", "match": {"prefix": "/api/macro/raw"}, "service": "macro", "rewrite": ""},
]


def potok(*args: str, cwd: Path = REPO) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "POTOK_CONFIG"}
    return subprocess.run(
        [sys.executable, "-m", "potok", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        env=env,
        timeout=60,
        check=False,
    )


def write(tmp_path: Path, doc: dict | str, name: str = "potok.yaml") -> Path:
    path = tmp_path / name
    path.write_text(doc if isinstance(doc, str) else yaml.safe_dump(doc, sort_keys=False))
    return path


# check -----------------------------------------------------------------------------------


def test_check_a_valid_file(tmp_path):
    path = write(tmp_path, {"services": SERVICES, "routes": ROUTES})
    result = potok("check", "--config", str(path))
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"{path}: ok (2 services, 7 routes)\n"
    assert result.stderr == ""


def test_check_finds_potok_yaml_in_the_working_directory(tmp_path):
    write(tmp_path, {"services": SERVICES})
    result = potok("check", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout == "potok.yaml: ok (2 services, 0 routes)\n"


def test_check_lists_every_field_problem(tmp_path):
    doc = {
        "server": {"port": 70000, "timeouts": {"keepalive": "10 parsecs"}},
        "services": {"users": {"targets": ["http://ok:1", "ftp://bad:1"]}},
        "routes": [
            {"match": {"prefix": "api"}, "service": "users"},
            {"match": {"prefix": "/b"}, "service": "users", "matchh": 1},
        ],
    }
    path = write(tmp_path, doc)
    result = potok("check", "-c", str(path))
    assert result.returncode == 1
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert lines[0] == f"{path}: invalid configuration"
    assert sorted(line.split(": ", 1)[0] for line in lines[1:]) == [
        "  routes[0].match.prefix",
        "  routes[1].matchh",
        "  server.port",
        "  server.timeouts.keepalive",
        "  services.users.targets[1].url",
    ]
    assert "  routes[0].match.prefix: 'api' must start with '/'" in lines
    assert "  server.timeouts.keepalive: bad duration '10 parsecs'" in result.stderr


def test_check_lists_every_cross_reference_problem(tmp_path):
    doc = {
        "services": SERVICES,
        "routes": [
            {"name": "x", "match": {"prefix": "/a"}, "service": "ghost"},
            {"name": "x", "match": {"prefix": "/b"}, "service": "users"},
            {"match": {"path": "/api/v1/metrics"}, "service": "users"},
        ],
    }
    result = potok("check", "-c", str(write(tmp_path, doc)))
    assert result.returncode == 1
    assert result.stderr.splitlines()[1:] == [
        "  routes[0].service: unknown service 'ghost' (services: macro, users)",
        "  routes[1].name: duplicates the name of routes[0]",
        "  routes[2].match: takes over the gateway's own endpoint /api/v1/metrics",
    ]


def test_check_a_missing_variable(tmp_path):
    path = write(tmp_path, "server: {host: '${POTOK_TEST_SURELY_UNSET}'}\n")
    result = potok("check", "-c", str(path))
    assert result.returncode == 1
    assert result.stderr.splitlines()[1:] == [
        "  server.host: environment variable POTOK_TEST_SURELY_UNSET is not set and has no default"
    ]


def test_check_a_missing_file(tmp_path):
    path = tmp_path / "nope.yaml"
    result = potok("check", "--config", str(path))
    assert result.returncode == 1
    lines = result.stderr.splitlines()
    assert lines[0] == f"{path}: invalid configuration"
    assert lines[1].startswith(f"  cannot read {path}: ")
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(
    ("text", "where"),
    [("server: [1\n", "line 2, column 1"), ("a: b: c\n", "line 1, column 5")],
)
def test_check_invalid_yaml(tmp_path, text, where):
    result = potok("check", "-c", str(write(tmp_path, text)))
    assert result.returncode == 1
    [problem] = result.stderr.splitlines()[1:]
    assert problem.startswith(f"  {where}: invalid YAML: ")
    assert "Traceback" not in result.stderr


def test_check_a_non_mapping(tmp_path):
    result = potok("check", "-c", str(write(tmp_path, "- 1\n")))
    assert result.returncode == 1
    assert result.stderr.splitlines()[1:] == [
        "  the configuration must be a mapping at the top level"
    ]


# routes ------------------------------------------------------------------------------------


def route_table(stdout: str) -> list[dict[str, str]]:
    """Rows of the `potok routes` table as dicts, cut at the header's column starts."""
    header, *rows = stdout.splitlines()
    names = ["ROUTE", "METHODS", "MATCH (host kind path)", "SERVICE", "REWRITE", "POLICIES"]
    starts = [header.index(name) for name in names]
    ends = [*starts[1:], None]
    return [
        {name: row[start:end].strip() for name, start, end in zip(names, starts, ends, strict=True)}
        for row in rows
    ]


def test_routes_most_specific_first(tmp_path):
    result = potok(
        "routes", "--config", str(write(tmp_path, {"services": SERVICES, "routes": ROUTES}))
    )
    assert result.returncode == 0, result.stderr
    rows = route_table(result.stdout)
    assert [
        (r["ROUTE"], r["METHODS"], r["MATCH (host kind path)"], r["SERVICE"], r["REWRITE"])
        for r in rows
    ] == [
        ("host", "*", "*.example.com prefix /", "macro", "-"),
        ("root", "*", "* prefix /api/macro/raw", "macro", "-> /"),
        ("me", "*", "* exact /users/me", "users", "-"),
        ("macro", "*", "* prefix /api/macro", "macro", "-> /v1"),
        ("user", "DELETE,GET", "* exact /users/{id}", "users", "-> /v2/users/{id}"),
        ("strip", "*", "* prefix /s", "users", "strip prefix"),
        ("catch-all", "*", "* prefix /", "users", "-"),
    ]
    assert all(r["POLICIES"] for r in rows)


def test_routes_names_unnamed_routes_by_service_and_index(tmp_path):
    doc = {"services": SERVICES, "routes": [{"match": {"prefix": "/a"}, "service": "users"}]}
    result = potok("routes", "-c", str(write(tmp_path, doc)))
    assert result.returncode == 0, result.stderr
    assert [r["ROUTE"] for r in route_table(result.stdout)] == ["users-0"]


def test_routes_with_no_routes_prints_the_header_only(tmp_path):
    result = potok("routes", "-c", str(write(tmp_path, {"services": SERVICES})))
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        "ROUTE  METHODS  MATCH (host kind path)  SERVICE  REWRITE  POLICIES"
    ]


def test_routes_on_an_invalid_file(tmp_path):
    doc = {"routes": [{"match": {"prefix": "/a"}, "service": "ghost"}]}
    result = potok("routes", "-c", str(write(tmp_path, doc)))
    assert result.returncode == 1
    assert result.stdout == ""
    assert "  routes[0].service: unknown service 'ghost'" in result.stderr


# config-docs -------------------------------------------------------------------------------


def schema_types(node: dict, defs: dict) -> set[str]:
    """The JSON types a schema node admits (following $ref, anyOf, oneOf)."""
    if "$ref" in node:
        return schema_types(defs[node["$ref"].removeprefix("#/$defs/")], defs)
    found = set()
    for key in ("anyOf", "oneOf"):
        for option in node.get(key, ()):
            found |= schema_types(option, defs)
    kind = node.get("type")
    found |= {kind} if isinstance(kind, str) else set(kind or ())
    return found


@pytest.fixture(scope="module")
def schema() -> dict:
    result = potok("config-docs", "--schema")
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_schema_is_a_json_schema_of_the_whole_file(schema):
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert schema["title"] == "Potok gateway configuration"
    assert schema["type"] == "object"
    assert schema["additionalProperties"] is False
    assert set(schema["properties"]) == {
        "server",
        "logging",
        "metrics",
        "services",
        "routes",
        "policies",
        "api",
        "database",
        "auth",
        "redis",
        "realtime",
        "webhooks",
        "reload",
        "tracing",
        "acme",
        "admin",
        "cache",
    }


def test_schema_refs_all_resolve(schema):
    refs: list[str] = []

    def walk(node: object) -> None:
        if isinstance(node, dict):
            if "$ref" in node:
                refs.append(node["$ref"])
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(schema)
    assert refs
    for ref in refs:
        assert ref.startswith("#/$defs/")
        assert ref.removeprefix("#/$defs/") in schema["$defs"]


def test_schema_closes_every_object(schema):
    for name, definition in schema["$defs"].items():
        if definition.get("type") == "object":
            assert definition.get("additionalProperties") is False, name


@pytest.mark.parametrize(
    ("definition", "field", "example"),
    [
        ("ServerTimeouts", "keepalive", "10s"),
        ("UpstreamTimeouts", "connect", "250ms"),
        ("ServerLimits", "max_body_bytes", "5MiB"),
        ("RequestSizeConfig", "max_bytes", "16KiB"),
    ],
)
def test_schema_admits_unit_strings(schema, definition, field, example):
    # An editor validating against the schema must not flag `keepalive: 10s`.
    node = schema["$defs"][definition]["properties"][field]
    assert "string" in schema_types(node, schema["$defs"]), f"{field}: {example!r} would be refused"


@pytest.mark.parametrize(
    ("definition", "field"),
    [("ServerTimeouts", "keepalive"), ("ServerLimits", "max_body_bytes")],
)
def test_schema_states_positive_with_a_json_schema_keyword(schema, definition, field):
    # pydantic's own `gt` is not JSON Schema; editors ignore it.
    node = schema["$defs"][definition]["properties"][field]
    nodes = [node, *node.get("anyOf", ()), *node.get("oneOf", ())]
    assert not any("gt" in n for n in nodes)
    assert any(n.get("exclusiveMinimum") == 0 for n in nodes)


def test_schema_admits_bare_target_urls(schema):
    items = schema["$defs"]["ServiceConfig"]["properties"]["targets"]["items"]
    assert "string" in schema_types(items, schema["$defs"])


def test_config_docs_prints_markdown():
    result = potok("config-docs")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("# Configuration reference\n")
    for model in ("GatewayConfig", "ServerConfig", "RouteConfig", "MatchConfig", "HeadersConfig"):
        assert f"## `{model}`" in result.stdout


def test_docs_configuration_md_matches_the_models():
    docs = REPO / "docs" / "configuration.md"
    assert docs.exists(), (
        "docs/configuration.md is missing: run `potok config-docs > docs/configuration.md`"
    )
    result = potok("config-docs")
    assert result.returncode == 0, result.stderr
    assert docs.read_text(encoding="utf-8") == result.stdout, (
        "docs/configuration.md is stale: run `potok config-docs > docs/configuration.md`"
    )


def test_the_command_the_docs_header_names_works():
    # The generated header names the command that generates it; that command must work.
    import re

    reference = potok("config-docs").stdout
    command = re.search(r"by `potok ([^`]+)`", reference)
    assert command is not None
    result = potok(*command.group(1).split())
    assert result.returncode == 0, result.stderr
    assert result.stdout == reference


def test_version_and_help():
    version = potok("--version")
    assert version.returncode == 0
    assert version.stdout.startswith("potok ")
    bare = potok()
    assert bare.returncode == 2
    assert "COMMAND" in bare.stderr
