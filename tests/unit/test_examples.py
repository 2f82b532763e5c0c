"""The shipped configs (examples/ and the demo's) validate, and route as documented."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from potok.cli.routes import table_rows
from potok.config.loader import ConfigError, load_config
from potok.config.models import GatewayConfig
from potok.demo import demo_config_resource
from potok.routing.table import RouteMatch
from potok.runtime import Runtime

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = sorted((ROOT / "examples").glob("*.yaml"))
DEMO_CONFIG = Path(str(demo_config_resource()))
ALL_CONFIGS = [*EXAMPLES, DEMO_CONFIG]

_VARIABLE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(:-[^}]*)?\}")

# Values for the variables the examples require (no default in the file).
SECRETS = {
    "ADMIN_SERVICE_API_KEY": "admin-secret",
    "STATE_SERVICE_API_KEY": "state-secret",
    "TASK_SERVICE_API_KEY": "task-secret",
    "MARKET_DATA_SERVICE_API_KEY": "md-secret",
    "ANALYTICS_SERVICE_API_KEY": "an-secret",
    "SCRAPER_SERVICE_API_KEY": "sc-secret",
}


def variables_in(path: Path) -> set[str]:
    """Variables the config reads (comments, which may mention `${VAR}`, left out)."""
    text = re.sub(r"(^|\s)#.*$", "", path.read_text(), flags=re.M)
    return {m.group(1) for m in _VARIABLE.finditer(text)}


def load(path: Path, **extra: str) -> GatewayConfig:
    return load_config(path, {**SECRETS, **extra})


def test_examples_exist():
    names = {p.name for p in EXAMPLES}
    assert {"potok.yaml", "trading.yaml"} <= names
    assert DEMO_CONFIG.is_file()


@pytest.mark.parametrize("path", ALL_CONFIGS, ids=lambda p: p.name)
def test_config_validates(path):
    config = load(path)
    assert config.services
    assert config.routes
    for route in config.routes:
        assert set(route.service_names) <= set(config.services), route.name


@pytest.mark.parametrize("path", ALL_CONFIGS, ids=lambda p: p.name)
def test_every_variable_is_in_env_example(path):
    listed = set(re.findall(r"^([A-Z][A-Z0-9_]*)=", (ROOT / ".env.example").read_text(), re.M))
    missing = variables_in(path) - listed
    assert not missing, f"{path.name} uses variables .env.example does not list: {sorted(missing)}"


@pytest.mark.parametrize("path", ALL_CONFIGS, ids=lambda p: p.name)
def test_env_example_values_are_accepted(path):
    values = dict(
        re.findall(r"^([A-Z][A-Z0-9_]*)=(.*)$", (ROOT / ".env.example").read_text(), re.M)
    )
    load_config(path, values)


def test_required_secrets_are_named_when_missing():
    with pytest.raises(ConfigError) as caught:
        load_config(ROOT / "examples" / "trading.yaml", {})
    fields = {field for field, _ in caught.value.problems}
    assert fields == {
        "services.market-data.api_key.value",
        "services.analytics.api_key.value",
        "services.scraper.api_key.value",
    }


def test_demo_config_has_defaults_for_everything():
    config = load_config(DEMO_CONFIG, {})
    assert config.services["admin"].api_key is not None
    assert config.services["admin"].api_key.value == "demo-admin-key"
    assert config.services["admin"].targets[0].url == "http://127.0.0.1:3000"
    assert config.services["state"].targets[0].url == "http://127.0.0.1:3002"
    assert config.services["task"].targets[0].url == "http://127.0.0.1:3003"


def test_demo_config_takes_ports_and_keys_from_the_environment():
    config = load_config(
        DEMO_CONFIG, {"POTOK_DEMO_TASK_PORT": "4567", "ADMIN_SERVICE_API_KEY": "from-env"}
    )
    assert config.services["task"].targets[0].url == "http://127.0.0.1:4567"
    assert config.services["admin"].api_key is not None
    assert config.services["admin"].api_key.value == "from-env"


def test_trading_routes_table_shows_the_rewrites():
    rows = {row[0]: row for row in table_rows(load(ROOT / "examples" / "trading.yaml"))}
    expected = {
        "macro": ("* prefix /api/macro", "market-data", "-> /api/market-data/macro"),
        "on-chain": ("* prefix /api/on-chain", "market-data", "-> /api/market-data/on-chain"),
        "sentiment": ("* prefix /api/sentiment", "analytics", "-> /api/analytics/sentiment"),
        "social": ("* prefix /api/social", "scraper", "-> /api/scraper/social"),
        "ticker": (
            "* exact /api/ticker/{symbol}",
            "market-data",
            "-> /api/market-data/quotes/{symbol}",
        ),
        "scraper-ops": ("ops.trading.example prefix /scraper", "scraper", "strip prefix"),
        "market-data": ("* prefix /api/market-data", "market-data", "-"),
    }
    for name, (match, service, rewrite) in expected.items():
        _, _, row_match, row_service, row_rewrite, _ = rows[name]
        assert (row_match, row_service, row_rewrite) == (match, service, rewrite), name


def upstream_path(runtime: Runtime, method: str, path: str, host: str = "") -> tuple[str, str]:
    """(route name, path sent upstream) for a request, as the gateway computes them."""
    match = runtime.table.match(method.encode(), path.encode(), host)
    assert isinstance(match, RouteMatch), f"{method} {path} does not route"
    route = match.target
    rewritten = route.rewrite(path.encode(), match) if route.rewrite is not None else path.encode()
    return route.name, rewritten.decode()


@pytest.mark.parametrize(
    ("method", "path", "host", "route", "upstream"),
    [
        ("GET", "/api/macro/cpi", "", "macro", "/api/market-data/macro/cpi"),
        ("GET", "/api/macro", "", "macro", "/api/market-data/macro"),
        ("GET", "/api/on-chain/btc/flows", "", "on-chain", "/api/market-data/on-chain/btc/flows"),
        ("POST", "/api/sentiment/eth", "", "sentiment", "/api/analytics/sentiment/eth"),
        ("GET", "/api/social/twitter/trends", "", "social", "/api/scraper/social/twitter/trends"),
        ("GET", "/api/ticker/BTC-USD", "", "ticker", "/api/market-data/quotes/BTC-USD"),
        ("GET", "/api/market-data/quotes/ETH", "", "market-data", "/api/market-data/quotes/ETH"),
        ("GET", "/scraper/jobs/7", "ops.trading.example", "scraper-ops", "/jobs/7"),
    ],
)
def test_trading_requests_reach_the_documented_paths(method, path, host, route, upstream):
    runtime = Runtime(load(ROOT / "examples" / "trading.yaml"))
    assert upstream_path(runtime, method, path, host) == (route, upstream)


def test_trading_unrouted_paths():
    runtime = Runtime(load(ROOT / "examples" / "trading.yaml"))
    assert runtime.table.match(b"GET", b"/api/macroeconomics", "") is None
    assert runtime.table.match(b"GET", b"/api/ticker/BTC/history", "") is None
    assert runtime.table.match(b"GET", b"/scraper/jobs", "other.example") is None


@pytest.mark.parametrize(
    ("config", "path", "upstream"),
    [
        ("potok.yaml", "/legacy/tasks/acme/7", "/api/v1/orgs/acme/tasks/7"),
        ("potok.yaml", "/legacy/tasks/acme", "/api/v1/orgs/acme/tasks"),
        ("potok-demo.yaml", "/legacy/tasks/acme/7", "/api/v1/orgs/acme/tasks/7"),
    ],
)
def test_legacy_task_rewrite(config, path, upstream):
    path_of = {p.name: p for p in ALL_CONFIGS}
    runtime = Runtime(load(path_of[config]))
    assert upstream_path(runtime, "GET", path) == ("legacy-tasks", upstream)
