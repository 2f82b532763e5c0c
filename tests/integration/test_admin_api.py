"""The admin API through a real gateway (one worker) over real sockets: reads, who may call
it, applying a config, forcing a breaker, draining a target, users and keys, the audit."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator

import pytest
import yaml

from tests.support.admin import USER_PASSWORD, AdminGateway, from_address, put_config, wait_until
from tests.support.gateway import GatewayProcess
from tests.support.identity_gateway import call
from tests.support.net import free_port, request
from tests.support.upstream import Upstream


@pytest.fixture(scope="module")
def targets() -> Iterator[tuple[Upstream, Upstream]]:
    servers = (Upstream(), Upstream())
    yield servers
    for server in servers:
        server.stop()


@pytest.fixture(scope="module")
def gateway(targets: tuple[Upstream, Upstream]) -> Iterator[AdminGateway]:
    gateway = AdminGateway([targets[0].url, targets[1].url])
    yield gateway
    gateway.stop()


# Reads ---------------------------------------------------------------------------------


def test_the_running_config_is_shown_with_secrets_masked_and_its_digest(gateway):
    answer = gateway.admin("GET", "/config")
    assert answer.status == 200
    document = answer.json()
    signing = document["config"]["auth"]["token_service"]["signing"]
    assert signing["secret"] == "***"
    assert "test-token-service-secret" not in answer.body.decode()
    health = request(gateway.port, "GET", "/api/v1/health").json()
    assert document["digest"] == health["config"]["digest"]
    assert document["file"]["path"] == str(gateway.process.config_path.resolve())
    assert document["file"]["writable"] is True
    assert answer.header("etag") == f'"{document["file"]["etag"]}"'


def test_routes_services_workers_and_realtime_are_reported(gateway, targets):
    routes = gateway.admin("GET", "/routes").json()["routes"]
    assert [r["name"] for r in routes] == ["limited", "keyed", "all"]
    assert "rate_limit" in routes[0]["policies"]
    services = gateway.admin("GET", "/services").json()["services"]
    names = [t["target"] for t in services["up"]["targets"]]
    assert names == [f"127.0.0.1:{targets[0].port}", f"127.0.0.1:{targets[1].port}"]
    assert services["up"]["breaker"] == "closed"
    workers = gateway.admin("GET", "/workers").json()
    assert workers["expected"] == 1
    assert workers["workers"][0]["pid"] == gateway.process.process.pid
    assert gateway.admin("GET", "/realtime").json()["enabled"] is False


def test_rate_limit_refusals_show_the_top_keys(gateway):
    for _ in range(3):
        request(gateway.port, "GET", "/limited/x")
    limits = gateway.admin("GET", "/rate-limits").json()["rate_limits"]
    limited = next(limit for limit in limits if limit["routes"] == ["limited"])
    assert limited["limit"] == 1 and limited["key"] == "ip"
    assert limited["refused_total"] >= 2
    assert limited["top_keys"][0]["key"] == "ip:127.0.0.1"
    assert limited["top_keys"][0]["refused"] >= 2


def test_traffic_counts_requests_per_route(gateway):
    before = gateway.admin("GET", "/traffic").json()["routes"].get("all", {"requests": 0})
    for _ in range(4):
        assert request(gateway.port, "GET", "/counted").status == 200
    after = gateway.admin("GET", "/traffic").json()["routes"]["all"]
    assert after["requests"] - before["requests"] == 4


# Who may call it ---------------------------------------------------------------------------


def test_the_public_port_needs_the_admin_role(gateway):
    anonymous = gateway.public("GET", "/status")
    assert anonymous.status == 401
    assert anonymous.header("content-type") == "application/problem+json"
    assert anonymous.header("www-authenticate").startswith("Bearer")
    plain = gateway.login("plain", USER_PASSWORD)
    refused = gateway.public("GET", "/status", Authorization=f"Bearer {plain}")
    assert refused.status == 403
    assert "admin" in refused.json()["detail"]
    forged = gateway.public("GET", "/status", Authorization="Bearer not.a.token")
    assert forged.status == 401
    assert gateway.public("GET", "/status", **gateway.bearer()).status == 200


def test_addresses_outside_allow_from_are_refused_whatever_they_present(gateway):
    # allow_from is 127.0.0.1/32: 127.0.0.2 is loopback too, but not allowed.
    on_listener = from_address("127.0.0.2", gateway.listen_port, "/api/v1/admin/status")
    assert on_listener.status == 403
    on_public = from_address("127.0.0.2", gateway.port, "/api/v1/admin/status", gateway.bearer())
    assert on_public.status == 403
    assert "allow_from" in on_public.json()["detail"]


# Actions -------------------------------------------------------------------------------


def test_a_forced_open_breaker_answers_every_request_until_released(gateway, targets):
    before = targets[0].total + targets[1].total
    forced = gateway.admin("POST", "/services/up/breaker", {"mode": "open"})
    assert forced.status == 200
    breaker = forced.json()["workers"]["0"]["result"]["breaker"]
    assert breaker["state"] == "open" and breaker["forced"] == "open"
    answer = request(gateway.port, "GET", "/during-maintenance")
    assert answer.status == 503
    assert "circuit breaker is open" in answer.json()["detail"]
    assert answer.header("retry-after") is not None
    assert targets[0].total + targets[1].total == before  # nothing went upstream
    breakers = gateway.admin("GET", "/breakers").json()["breakers"]
    assert breakers["up"]["state"] == "open"
    assert "forced open" in breakers["up"]["workers"]["0"]["reason"]
    released = gateway.admin("POST", "/services/up/breaker", {"mode": "auto"})
    assert released.json()["workers"]["0"]["result"]["breaker"]["state"] == "half_open"
    for _ in range(5):  # the probes close it (success_threshold)
        assert request(gateway.port, "GET", "/after").status == 200
    assert gateway.admin("GET", "/breakers").json()["breakers"]["up"]["state"] == "closed"


def test_forcing_an_unknown_service_or_mode_is_refused(gateway):
    unknown = gateway.admin("POST", "/services/nope/breaker", {"mode": "open"})
    assert unknown.status == 404
    assert unknown.header("content-type") == "application/problem+json"
    bad = gateway.admin("POST", "/services/up/breaker", {"mode": "sideways"})
    assert bad.status == 422
    assert bad.json()["errors"][0]["field"] == "mode"


def test_a_drained_target_gets_no_new_requests(gateway, targets):
    first, second = targets
    name = f"127.0.0.1:{first.port}"
    drained = gateway.admin("POST", f"/services/up/targets/{name}/drain")
    assert drained.status == 200
    before = first.total
    for _ in range(10):
        assert request(gateway.port, "GET", "/drained").status == 200
    assert first.total == before
    last = gateway.admin("POST", f"/services/up/targets/127.0.0.1:{second.port}/drain")
    assert last.status == 409  # the last target serving: hold the breaker open instead
    assert gateway.admin("POST", f"/services/up/targets/{name}/enable").status == 200
    for _ in range(10):
        request(gateway.port, "GET", "/enabled")
    assert first.total > before
    missing = gateway.admin("POST", "/services/up/targets/127.0.0.1:1/drain")
    assert missing.status == 404


def _file(gateway: AdminGateway) -> dict:
    return yaml.safe_load(gateway.process.config_path.read_text())


def test_applying_a_config_validates_writes_the_file_and_reloads(gateway, targets):
    etag = gateway.admin("GET", "/config").json()["file"]["etag"]
    document = _file(gateway)
    document["routes"].insert(
        2, {"name": "added", "match": {"prefix": "/added"}, "service": "up", "strip_prefix": True}
    )
    text = yaml.safe_dump(document)
    answer = put_config(gateway.listen_port, text, If_Match=f'"{etag}"')
    assert answer.status == 200, answer
    assert answer.json()["workers"]["0"]["result"]["result"] == "applied"
    assert gateway.process.config_path.read_text() == text  # written back
    assert "added" in [r["name"] for r in gateway.admin("GET", "/routes").json()["routes"]]
    assert request(gateway.port, "GET", "/added/echo").json()["path"] == "/echo"
    reloads = gateway.admin("GET", "/reloads").json()["reloads"]
    assert reloads[0]["trigger"] == "admin: config applied"
    assert reloads[0]["result"] == "applied"
    assert reloads[0]["changes"]["routes_added"] == ["added"]
    stale = put_config(gateway.listen_port, text, If_Match=f'"{etag}"')
    assert stale.status == 412


def test_a_config_that_does_not_validate_is_refused_naming_the_field(gateway):
    before = gateway.process.config_path.read_text()
    document = _file(gateway)
    document["routes"][0]["service"] = "missing"
    document["routes"][1]["policies"] = {"rate_limit": {"limit": 0, "window": "1s"}}
    answer = put_config(gateway.listen_port, yaml.safe_dump(document))
    assert answer.status == 422
    assert answer.header("content-type") == "application/problem+json"
    fields = {e["field"]: e["message"] for e in answer.json()["errors"]}
    assert "routes[1].policies.rate_limit.limit" in fields
    restart = dict(document, routes=_file(gateway)["routes"])
    restart["server"] = {**restart["server"], "backlog": 17}
    refused = put_config(gateway.listen_port, yaml.safe_dump(restart))
    assert refused.status == 422
    assert refused.json()["errors"] == [
        {"field": "server.backlog", "message": "changing it needs a restart"}
    ]
    assert gateway.process.config_path.read_text() == before
    not_yaml = put_config(gateway.listen_port, "routes: [unclosed")
    assert not_yaml.status == 422
    assert not_yaml.json()["errors"][0]["field"].startswith("line ")


def test_reload_from_the_file(gateway):
    document = _file(gateway)
    document["server"]["timeouts"] = {"keepalive": "61s"}
    gateway.process.config_path.write_text(yaml.safe_dump(document))
    answer = gateway.admin("POST", "/reload")
    assert answer.status == 200
    assert answer.json()["workers"]["0"]["result"]["result"] == "applied"
    again = gateway.admin("POST", "/reload")
    assert again.json()["workers"]["0"]["result"]["result"] == "unchanged"


def test_users_are_created_listed_and_disabled(gateway):
    created = gateway.public(
        "POST",
        "/users",
        {"username": "ops", "password": "ops password 123", "roles": ["admin"]},
        **gateway.bearer(),
    )
    assert created.status == 201, created
    assert "password" not in created.json() and "password_hash" not in created.json()
    listed = gateway.public("GET", "/users", **gateway.bearer()).json()["users"]
    assert "ops" in [u["username"] for u in listed]
    again = gateway.public(
        "POST", "/users", {"username": "ops", "password": "ops password 123"}, **gateway.bearer()
    )
    assert again.status == 409
    token = gateway.login("ops", "ops password 123")
    assert gateway.public("GET", "/status", Authorization=f"Bearer {token}").status == 200
    assert gateway.public("POST", "/users/ops/disable", **gateway.bearer()).status == 200
    wait_until(
        lambda: gateway.public("GET", "/status", Authorization=f"Bearer {token}").status == 401
    )
    assert gateway.public("POST", "/users/nobody/disable", **gateway.bearer()).status == 404


def test_a_rotated_api_key_is_refused_at_once(gateway):
    created = gateway.admin("POST", "/keys", {"name": "ci", "roles": ["admin"]})
    assert created.status == 201
    old_key, old_id = created.json()["key"], created.json()["id"]
    # The key mirror syncs every 30 s here: the admin API tells every worker at once.
    assert request(gateway.port, "GET", "/keyed/x", {"X-API-Key": old_key}).status == 200
    assert gateway.public("GET", "/status", X_API_Key=old_key).status == 200
    rotated = gateway.admin("POST", f"/keys/{old_id}/rotate", {"overlap": 0})
    assert rotated.status == 200
    new_key = rotated.json()["new"]["key"]
    assert rotated.json()["old"]["replaced_by"] == rotated.json()["new"]["id"]
    assert request(gateway.port, "GET", "/keyed/x", {"X-API-Key": old_key}).status == 401
    assert gateway.public("GET", "/status", X_API_Key=old_key).status == 401
    assert request(gateway.port, "GET", "/keyed/x", {"X-API-Key": new_key}).status == 200
    assert gateway.public("GET", "/status", X_API_Key=new_key).status == 200
    listed = {k["id"]: k for k in gateway.admin("GET", "/keys").json()["keys"]}
    assert listed[old_id]["state"] == "expired"
    assert "key" not in listed[old_id]
    revoked = gateway.admin("POST", f"/keys/{rotated.json()['new']['id']}/revoke")
    assert revoked.json()["state"] == "revoked"
    assert request(gateway.port, "GET", "/keyed/x", {"X-API-Key": new_key}).status == 401


def test_every_call_is_audited_and_the_audit_can_be_queried(gateway):
    since = time.time()
    gateway.admin("POST", "/services/up/breaker", {"mode": "closed"})
    gateway.admin("POST", "/services/up/breaker", {"mode": "auto"})
    gateway.public("GET", "/status")  # refused: no credentials
    gateway.public("GET", "/workers", **gateway.bearer())

    def events(**query: str) -> list[dict]:
        text = "&".join(f"{k}={v}" for k, v in query.items())
        answer = gateway.admin("GET", f"/audit?since={since}&{text}")
        assert answer.status == 200, answer
        return answer.json()["events"]

    forced = wait_until(lambda: events(action="admin.force_breaker"))
    assert len(forced) >= 2
    assert forced[0]["actor"] == "listener" and forced[0]["outcome"] == "ok"
    assert forced[0]["detail"]["path"] == "/api/v1/admin/services/up/breaker"
    denied = wait_until(lambda: events(action="admin.get_status"))
    assert any(e["outcome"] == "denied" and e["detail"]["status"] == 401 for e in denied)
    by_root = wait_until(lambda: events(action="admin.get_workers"))
    assert by_root[0]["actor"] not in (None, "listener")
    until = events(action="admin.*", until=str(since))
    assert until == []
    assert gateway.admin("GET", "/audit?limit=0").status == 422


def test_applying_a_config_the_gateway_cannot_write_back_is_refused(upstream):
    listen = free_port()
    config = {
        "metrics": {"listen": f"127.0.0.1:{listen}"},
        "services": {"up": {"targets": [upstream.url]}},
        "routes": [{"name": "all", "match": {"prefix": "/"}, "service": "up"}],
    }
    gateway = GatewayProcess(config)
    # The tests run as root, who may write any file: an immutable one stops even root.
    subprocess.run(["chattr", "+i", str(gateway.config_path)], check=True)
    try:
        before = gateway.config_path.read_text()
        shown = call(listen, "GET", "/api/v1/admin/config").json()
        assert shown["file"]["writable"] is False
        document = yaml.safe_load(before)
        document["routes"][0]["name"] = "renamed"
        answer = put_config(listen, yaml.safe_dump(document))
        assert answer.status == 409
        assert "not writable" in answer.json()["detail"]
        assert gateway.config_path.read_text() == before
        routes = call(listen, "GET", "/api/v1/admin/routes").json()["routes"]
        assert routes[0]["name"] == "all"  # nothing applied either
    finally:
        subprocess.run(["chattr", "-i", str(gateway.config_path)], check=True)
        gateway.stop()


@pytest.mark.parametrize(
    "headers",
    [
        {"Sec-Fetch-Site": "cross-site"},
        {"Sec-Fetch-Site": "same-site"},
        {"Origin": "https://evil.example"},
        {"Origin": "null"},
    ],
)
def test_a_state_change_sent_by_another_sites_page_is_refused(gateway, targets, headers):
    """CSRF: a page elsewhere makes the operator's browser POST a form to the loopback
    admin port, which needs no credentials: refused by what the browser says it is."""
    first = targets[0]
    name = f"127.0.0.1:{first.port}"
    refused = gateway.admin("POST", f"/services/up/targets/{name}/drain", **headers)
    assert refused.status == 403
    assert "refused" in refused.json()["detail"]
    before = first.total
    for _ in range(10):  # still in rotation: round robin over both targets reaches it
        assert request(gateway.port, "GET", "/still-served").status == 200
    assert first.total > before
    # The same call from a script (no browser headers) or the dashboard (same-origin).
    same = gateway.admin(
        "POST", f"/services/up/targets/{name}/drain", **{"Sec-Fetch-Site": "same-origin"}
    )
    assert same.status == 200
    assert gateway.admin("POST", f"/services/up/targets/{name}/enable").status == 200
