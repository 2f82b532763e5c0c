"""Stored XSS through the dashboard: client-chosen strings shown as text, never as markup.

A rate limit keyed by a request header puts the attacker's header value into the
dashboard's top-keys table; the page is then loaded in headless Chromium
(tests/support/browser.py) and must show the value as text, run none of it, and create
no element from it.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.browser import Browser
from tests.support.gateway import GatewayProcess
from tests.support.net import free_port, request
from tests.support.upstream import Upstream

PAYLOADS = [
    '<img src=x onerror="window.__xss=1">',
    '"><svg onload="window.__xss=2">',
    "</td><script>window.__xss=3</script>",
]


@pytest.fixture(scope="module")
def gateway() -> Iterator[GatewayProcess]:
    upstream = Upstream()
    listen = free_port()
    config = {
        "metrics": {"listen": f"127.0.0.1:{listen}"},
        "services": {"up": {"targets": [upstream.url]}},
        "routes": [
            {
                "name": "tenant",  # route names are refused unless [A-Za-z0-9_.-]
                "match": {"prefix": "/tenant"},
                "service": "up",
                "policies": {"rate_limit": {"limit": 1, "window": "60s", "key": "header:X-Tenant"}},
            },
            {"name": "up", "match": {"prefix": "/"}, "service": "up"},
        ],
    }
    process = GatewayProcess(config)
    process.listen_port = listen  # type: ignore[attr-defined]
    yield process
    process.stop()
    upstream.stop()


def test_client_supplied_keys_and_names_are_shown_as_text(gateway):
    for payload in PAYLOADS:
        for _ in range(3):  # past the limit: the key is among the refused ones
            request(gateway.port, "GET", "/tenant/x", {"X-Tenant": payload})
    chromium = Browser()
    try:
        chromium.navigate(f"http://127.0.0.1:{gateway.listen_port}/dashboard?interval=0.5")
        chromium.wait_for("Number(document.body.dataset.updates || 0) >= 2")
        chromium.wait_for("document.querySelector('#limits tbody td') !== null")
        shown = chromium.evaluate("document.body.textContent")
        for payload in PAYLOADS:
            assert payload in shown, payload  # as text, whole
        assert chromium.evaluate("window.__xss === undefined")
        injected = chromium.evaluate(
            "document.querySelectorAll('#limits img, #limits svg, #limits script').length"
        )
        assert injected == 0
    finally:
        chromium.close()
