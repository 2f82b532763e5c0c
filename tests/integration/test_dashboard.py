"""The dashboard in headless Chromium (tests/support/browser.py, the DevTools protocol)
against a real gateway and real upstreams: it loads without console errors, shows a
breaker opening when an upstream dies, passes axe-core, and its breaker and target
actions go through a confirmation dialog, by keyboard. A screenshot is written to
artifacts/dashboard.png (CI keeps it)."""

from __future__ import annotations

import json
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.admin import AdminGateway
from tests.support.browser import Browser
from tests.support.gateway import GatewayProcess
from tests.support.identity_gateway import call
from tests.support.net import free_port, request
from tests.support.upstream import Upstream

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "artifacts"
AXE = ROOT / "tests" / "js" / "node_modules" / "axe-core" / "axe.min.js"


@pytest.fixture(scope="module")
def upstreams() -> Iterator[dict[str, Upstream]]:
    servers = {"up": Upstream(), "spare": Upstream(), "spare2": Upstream()}
    yield servers
    for server in servers.values():
        server.stop()


@pytest.fixture(scope="module")
def gateway(upstreams: dict[str, Upstream]) -> Iterator[GatewayProcess]:
    listen = free_port()
    breaker = {"consecutive_failures": 3, "open_for": "60s"}
    database = Path(tempfile.mkdtemp(prefix="potok-dashboard-")) / "identity.db"
    config = {
        "database": {"url": f"sqlite:///{database}"},  # the audit log the page shows
        "metrics": {"listen": f"127.0.0.1:{listen}"},
        "services": {
            "up": {"targets": [upstreams["up"].url], "circuit_breaker": breaker},
            "spare": {
                "targets": [upstreams["spare"].url, upstreams["spare2"].url],
                "circuit_breaker": breaker,
            },
        },
        "routes": [
            {
                "name": "limited",
                "match": {"prefix": "/limited"},
                "service": "spare",
                "policies": {"rate_limit": {"limit": 2, "window": "60s"}},
            },
            {"name": "spare", "match": {"prefix": "/spare"}, "service": "spare"},
            {"name": "up", "match": {"prefix": "/"}, "service": "up"},
        ],
    }
    process = GatewayProcess(config)
    process.listen_port = listen  # type: ignore[attr-defined]
    yield process
    process.stop()


@pytest.fixture(scope="module")
def browser(gateway: GatewayProcess) -> Iterator[Browser]:
    for _ in range(5):  # traffic for the route table: answers, and rate-limit refusals
        assert request(gateway.port, "GET", "/hello").status == 200
        request(gateway.port, "GET", "/limited/x")
    chromium = Browser()
    try:
        chromium.navigate(f"http://127.0.0.1:{gateway.listen_port}/dashboard?interval=0.5")  # type: ignore[attr-defined]
        chromium.wait_for("Number(document.body.dataset.updates || 0) >= 2")
        yield chromium
    finally:
        chromium.close()


def admin(gateway: GatewayProcess, method: str, path: str, body: object = None) -> object:
    answer = call(gateway.listen_port, method, "/api/v1/admin" + path, body)  # type: ignore[attr-defined]
    assert answer.status == 200, answer
    return answer.json()


def text(browser: Browser, selector: str) -> str:
    value = browser.evaluate(f"document.querySelector({json.dumps(selector)})?.textContent ?? ''")
    return str(value)


def confirm_with_keyboard(browser: Browser, button: str, confirm: bool) -> None:
    """Focus a button, press Enter; in the dialog, Enter on Cancel, or Tab then Enter."""
    browser.focus(button)
    browser.press("Enter")
    browser.wait_for("document.getElementById('confirm').open")
    assert browser.evaluate("document.activeElement.id") == "confirm-cancel"  # safe default
    if confirm:
        browser.press("Tab")
        assert browser.evaluate("document.activeElement.id") == "confirm-ok"
    browser.press("Enter")
    browser.wait_for("!document.getElementById('confirm').open")


def test_the_page_loads_live_with_no_console_errors(browser):
    browser.wait_for("document.getElementById('connection').dataset.state === 'live'")
    assert browser.evaluate("document.title") == "Potok dashboard"
    services = browser.evaluate(
        "[...document.querySelectorAll('[data-service]')].map(e => e.dataset.service)"
    )
    assert services == ["spare", "up"]
    assert "breaker closed" in text(browser, "[data-service=up] .breaker-slot")
    assert text(browser, "[data-service=up] tbody tr td") == "healthy"
    routes = browser.evaluate(
        "[...document.querySelectorAll('#routes tbody th')].map(e => e.textContent)"
    )
    assert "up" in routes and "limited" in routes
    # Rate-limit refusals: the limited route allowed 2 of 5.
    browser.wait_for("document.querySelector('#limits tbody td.num')?.textContent === '3'")
    assert "ip:127.0.0.1 (3)" in text(browser, "#limits tbody")
    browser.pump()
    assert browser.errors == []


def test_rates_follow_the_traffic(browser, gateway):
    # Requests keep coming while the page samples: the `up` route shows a rate and a p99.
    deadline = time.monotonic() + 20
    seen = None
    while time.monotonic() < deadline and not seen:
        for _ in range(10):
            request(gateway.port, "GET", "/hello")
        seen = browser.evaluate(
            "(() => { const row = [...document.querySelectorAll('#routes tbody tr')]"
            ".find(r => r.cells[0].textContent === 'up');"
            " return row && Number(row.cells[1].textContent) > 0"
            " && row.cells[3].textContent !== '—'; })()"
        )
    assert seen, "the up route never showed a request rate and a p99"


def test_a_dead_upstream_shows_its_breaker_opening(browser, gateway, upstreams):
    upstreams["up"].go_down()
    statuses = [request(gateway.port, "GET", "/hello").status for _ in range(4)]
    assert statuses[-1] == 503, statuses  # the breaker answers at once
    browser.wait_for("document.querySelector('[data-service=up] [data-breaker-state=open]')")
    assert "breaker open" in text(browser, "[data-service=up] .breaker-slot")
    assert text(browser, "#total-open") == "1"
    assert text(browser, "[data-service=up] tbody tr td").startswith("unhealthy")
    browser.wait_for("document.getElementById('announcer').textContent.includes('up is now open')")
    browser.screenshot(ARTIFACTS / "dashboard.png")
    assert (ARTIFACTS / "dashboard.png").stat().st_size > 10_000
    browser.pump()
    assert browser.errors == []


def axe_violations(browser: Browser) -> list[dict[str, object]]:
    found: list[dict[str, object]] = browser.evaluate(
        "axe.run(document, {runOnly: {type: 'tag', values:"
        " ['wcag2a', 'wcag2aa', 'wcag21a', 'wcag21aa', 'best-practice']}})"
        ".then(r => r.violations.map(v => ({id: v.id, impact: v.impact,"
        " nodes: v.nodes.map(n => n.target.join(' '))})))",
        await_promise=True,
    )
    return [v for v in found if v["impact"] in ("serious", "critical")]


def test_axe_finds_no_serious_or_critical_violations(browser):
    browser.inject_script(AXE)
    serious = axe_violations(browser)
    assert serious == [], json.dumps(serious, indent=1)
    # The confirmation dialog too, while it is open.
    browser.focus("[data-service=spare] .buttons button")
    browser.press("Enter")
    browser.wait_for("document.getElementById('confirm').open")
    serious = axe_violations(browser)
    browser.press("Escape")
    browser.wait_for("!document.getElementById('confirm').open")
    assert serious == [], json.dumps(serious, indent=1)


def test_forcing_a_breaker_asks_first_and_calls_the_admin_api(browser, gateway):
    button = "[data-service=spare] .buttons button:nth-child(1)"  # Force open
    assert text(browser, button) == "Force open"
    confirm_with_keyboard(browser, button, confirm=False)
    time.sleep(0.5)
    breakers = admin(gateway, "GET", "/breakers")["breakers"]  # type: ignore[index]
    assert breakers["spare"]["state"] == "closed"  # cancelled: nothing happened

    confirm_with_keyboard(browser, button, confirm=True)
    browser.wait_for("document.querySelector('[data-service=spare] [data-breaker-state=open]')")
    assert "held by an operator" in text(browser, "[data-service=spare] .breaker-slot")
    breakers = admin(gateway, "GET", "/breakers")["breakers"]  # type: ignore[index]
    assert breakers["spare"]["state"] == "open"
    assert breakers["spare"]["workers"]["0"]["forced"] == "open"
    assert request(gateway.port, "GET", "/spare/y").status == 503
    browser.wait_for("document.getElementById('announcer').textContent.includes('held open')")
    events = admin(gateway, "GET", "/audit?action=admin.force_breaker")["events"]  # type: ignore[index]
    assert events[0]["outcome"] == "ok"
    browser.wait_for("document.getElementById('audit').textContent.includes('admin.force_breaker')")

    confirm_with_keyboard(browser, "[data-service=spare] .buttons button:nth-child(3)", True)
    # Released from open: half-open, and the probes' answers (success_threshold 2) close it.
    browser.wait_for(
        "document.querySelector('[data-service=spare] [data-breaker-state=half_open]')"
    )
    assert [request(gateway.port, "GET", "/spare/z").status for _ in range(2)] == [200, 200]
    browser.wait_for("document.querySelector('[data-service=spare] [data-breaker-state=closed]')")
    assert admin(gateway, "GET", "/breakers")["breakers"]["spare"]["state"] == "closed"  # type: ignore[index]
    browser.pump()
    assert browser.errors == []


def test_draining_and_re_enabling_a_target(browser, gateway, upstreams):
    target = f"127.0.0.1:{upstreams['spare'].port}"
    row = f"[data-service=spare] tr[data-target='{target}']"
    confirm_with_keyboard(browser, f"{row} button", confirm=True)
    browser.wait_for(f"document.querySelector(\"{row}\").dataset.drained === 'true'")
    assert text(browser, f"{row} td") == "drained"
    assert text(browser, f"{row} button") == "Re-enable"
    services = admin(gateway, "GET", "/services")["services"]  # type: ignore[index]
    assert services["spare"]["targets"][0]["drained"] is True

    # The admin API's refusal (the last target in rotation) is shown, not swallowed.
    last = f"[data-service=spare] tr[data-target='127.0.0.1:{upstreams['spare2'].port}']"
    confirm_with_keyboard(browser, f"{last} button", confirm=True)
    browser.wait_for("document.getElementById('notice').textContent.startsWith('Refused')")
    assert "last target" in text(browser, "#announcer")
    browser.pump()  # Chromium logs the refused call (409) as a failed load: expected here
    browser.errors = [e for e in browser.errors if "409 (Conflict)" not in e]

    confirm_with_keyboard(browser, f"{row} button", confirm=True)
    browser.wait_for(f"document.querySelector(\"{row}\").dataset.drained === 'false'")
    services = admin(gateway, "GET", "/services")["services"]  # type: ignore[index]
    assert services["spare"]["targets"][0]["drained"] is False
    browser.pump()
    assert browser.errors == []


def test_signing_in_with_an_admin_api_key_on_the_public_port():
    upstream = Upstream()
    gateway = AdminGateway([upstream.url])  # admin.public: the public port needs credentials
    chromium: Browser | None = None
    try:
        chromium = Browser()
        key = gateway.admin("POST", "/keys", {"name": "browser", "roles": ["admin"]}).json()
        chromium.navigate(f"http://127.0.0.1:{gateway.port}/dashboard")
        chromium.wait_for("!document.getElementById('signin').hidden")
        assert chromium.evaluate("document.activeElement.id") == "credential"
        assert chromium.evaluate("document.querySelectorAll('[data-service]').length") == 0

        chromium.type_text("pk_0123456789abcdef_not-a-real-key")
        chromium.press("Enter")
        chromium.wait_for("document.getElementById('signin-error').textContent !== ''")
        assert chromium.evaluate("document.body.dataset.mode") == "signin"

        chromium.focus("#credential")
        chromium.evaluate("document.getElementById('credential').value = ''")
        chromium.type_text(key["key"])
        chromium.press("Enter")
        chromium.wait_for("Number(document.body.dataset.updates || 0) >= 1")
        assert chromium.evaluate("document.body.dataset.mode") == "dashboard"
        assert chromium.evaluate("[...document.querySelectorAll('[data-service]')].length") == 1
        # Kept for the tab, never as a cookie.
        assert (
            chromium.evaluate("sessionStorage.getItem('potok.dashboard.credential')") == key["key"]
        )
        assert chromium.evaluate("document.cookie") == ""
        chromium.pump()
        # The only errors: Chromium's log lines for the 401s it was answered (the page's
        # navigation and the wrong key's check) — no script error.
        assert [e for e in chromium.errors if "status of 401" not in e] == []
    finally:
        if chromium is not None:
            chromium.close()
        gateway.stop()
        upstream.stop()
