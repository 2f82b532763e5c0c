"""The policy registry: run order by stage and rank, the generated `policies:` models, the
cross-field checks each entry brings, and what a plugin may not do."""

from __future__ import annotations

import dataclasses
from importlib.metadata import EntryPoint
from typing import Any

import pytest
from pydantic import ValidationError

from potok.config.loader import ConfigError, load_config_text
from potok.policies.base import BuildContext, Policy, Stage
from potok.policies.config import ApiPoliciesConfig, PoliciesConfig, block_model
from potok.policies.entry import PolicyEntry, PolicyRegistryError
from potok.policies.registry import BUILT_IN, REGISTRY, PolicyRegistry, plugins
from tests.support.dummy_policy.config import DummyConfig
from tests.support.dummy_policy.entry import ENTRY as DUMMY


def test_built_ins_run_by_stage_then_rank_whatever_order_they_are_declared_in():
    assert [entry.name for entry in REGISTRY.in_order] == [
        "compress", "ip_filter", "cors", "security_headers", "request_size",
        "auth_mtls", "auth_jwt", "auth_api_key", "authorize",
        "rate_limit", "concurrency_limit", "validate", "cache", "headers",
    ]  # fmt: skip
    shuffled = PolicyRegistry(reversed(BUILT_IN))
    assert shuffled.in_order == REGISTRY.in_order
    assert shuffled.declared != REGISTRY.declared


def test_a_new_entry_runs_at_its_rank_and_ties_go_by_name():
    between = dataclasses.replace(DUMMY, name="between", stage=Stage.EDGE, rank=15)
    tie = dataclasses.replace(DUMMY, name="aaa_tie", stage=Stage.EDGE, rank=20)
    names = [entry.name for entry in REGISTRY.adding(between, tie).in_order]
    assert names[:6] == [
        "compress", "ip_filter", "between", "aaa_tie", "cors", "security_headers"
    ]  # fmt: skip


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("cors", "two policies are named 'cors'"),
        ("Bad-Name", "lowercase letters"),
        ("class", "keyword"),
        ("model_x", "model_"),
        ("get", "reserved"),
        ("merged_over", "reserved"),
    ],
)
def test_names_that_cannot_be_a_field_are_refused(name: str, message: str):
    with pytest.raises(PolicyRegistryError, match=message):
        REGISTRY.adding(dataclasses.replace(DUMMY, name=name))


def test_own_api_parts_need_own_api():
    with pytest.raises(PolicyRegistryError, match="need own_api=True"):
        REGISTRY.adding(dataclasses.replace(DUMMY, probes=True))


def test_the_generated_models_keep_field_order_descriptions_and_the_own_api_subset():
    assert PoliciesConfig.__name__ == "PoliciesConfig"
    assert list(PoliciesConfig.model_fields) == [entry.name for entry in BUILT_IN]
    assert PoliciesConfig.model_fields["cors"].description == "Cross-origin requests from browsers."
    own = [entry.name for entry in BUILT_IN if entry.own_api]
    assert list(ApiPoliciesConfig.model_fields) == own
    assert "front end" in (ApiPoliciesConfig.model_fields["cors"].description or "")
    assert [e.name for e in ApiPoliciesConfig.policy_entries if e.probes] == [
        "cors",
        "security_headers",
    ]
    with pytest.raises(ValidationError, match="Extra inputs are not permitted"):
        PoliciesConfig.model_validate({"nope": {}})


def test_a_temporary_registry_generates_models_with_its_policy():
    registry = REGISTRY.adding(DUMMY)
    route_model = block_model(registry, own_api=False)
    assert list(route_model.model_fields)[-1] == "dummy"
    assert "dummy" not in block_model(registry, own_api=True).model_fields  # not own_api
    with pytest.raises(ValidationError) as caught:
        route_model.model_validate({"dummy": {"value": ""}})
    assert caught.value.errors()[0]["loc"] == ("dummy", "value")
    block = route_model.model_validate({"dummy": {"value": "v"}, "cors": {"allow_origins": ["*"]}})
    assert block.get(DUMMY) == DummyConfig(value="v")
    assert [entry.name for entry, _ in block.configured()] == ["cors", "dummy"]  # run order
    assert PoliciesConfig().get(DUMMY) is None  # not a field of the real model


def test_merged_over_fills_the_gaps_with_the_global_block():
    route = PoliciesConfig.model_validate({"cors": {"allow_origins": ["https://a.example"]}})
    defaults = PoliciesConfig.model_validate(
        {"cors": {"allow_origins": ["*"]}, "ip_filter": {"deny": ["10.0.0.0/8"]}}
    )
    merged = route.merged_over(defaults)
    assert type(merged) is PoliciesConfig
    assert [entry.name for entry, _ in merged.configured()] == ["ip_filter", "cors"]
    assert merged.configured()[1][1] == route.configured()[0][1]


def test_a_builder_must_return_its_entrys_name_and_stage():
    def build(config: Any, context: BuildContext) -> Policy:
        return Policy(name="dummy", stage=Stage.EDGE)

    wrong = dataclasses.replace(DUMMY, build=build)
    with pytest.raises(PolicyRegistryError, match="stage=EDGE; the entry says stage=AUTHORIZE"):
        wrong.built(DummyConfig(value="v"), None)  # type: ignore[arg-type]


def problems(text: str) -> list[tuple[str, str]]:
    with pytest.raises(ConfigError) as caught:
        load_config_text(text, {})
    return caught.value.problems


ROUTES = (
    "services: {up: {targets: ['http://127.0.0.1:1']}}\n"
    "routes:\n"
    "  - {name: a, match: {prefix: /a, methods: [GET]}, service: up}\n"
    "  - {name: b, match: {prefix: /b, methods: [GET]}, service: up, policies: {cors: "
    "{allow_origins: ['*']}}}\n"
    "  - {name: c, match: {prefix: /c, methods: [GET]}, service: up, policies: {ip_filter: "
    "{deny: [10.0.0.0/8]}}}\n"
)


def test_a_check_of_the_global_block_sees_only_the_routes_that_inherit_it():
    text = ROUTES + "policies: {cors: {allow_origins: ['*']}}\n"
    found = problems(text)[0][1]
    # Each route once: b through its own block, a and c through the global one.
    assert found.count("match.methods: add OPTIONS") == 3
    assert found.index("routes[0]") < found.index("routes[2]") < found.index("routes[1]")


def test_checks_of_every_block_run_and_name_their_fields():
    text = ROUTES + (
        "server: {workers: 2}\n"
        "api: {policies: {rate_limit: {limit: 5, window: 1m}}}\n"  # memory store, 2 workers
        "policies: {auth_jwt: {token_service: true}}\n"
    )
    found = problems(text)[0][1]
    assert "api.policies.rate_limit.store: the memory store counts" in found
    assert "policies.auth_jwt.token_service: needs auth.token_service.enabled" in found


def test_a_global_tenant_rule_is_checked_against_the_routes_that_inherit_it():
    text = (
        "services: {up: {targets: ['http://127.0.0.1:1']}}\n"
        "routes: [{match: {prefix: '/orgs/{org}'}, service: up},"
        " {match: {prefix: /b}, service: up}]\n"
        "policies: {authorize: {tenant: {param: org}}}\n"
    )
    found = problems(text)[0][1]
    assert "policies.authorize.tenant.param: routes[1] has no path parameter {org}" in found
    assert "routes[0]" not in found


CORS_TWIN = dataclasses.replace(DUMMY, name="cors")


def point(name: str, value: str) -> EntryPoint:
    return EntryPoint(name, value, "potok.policies")


def test_plugins_are_checked_before_anything_is_built():
    dummy = point("dummy", "tests.support.dummy_policy.entry:ENTRY")
    assert plugins(found=[dummy]) == [DUMMY]
    cases = [
        ([point("cors", f"{__name__}:CORS_TWIN")], "'cors' .* has the name of a built-in"),
        ([dummy, dummy], "both offer a policy named 'dummy'"),
        ([point("other", dummy.value)], "is a policy named 'dummy'; name the entry point"),
        ([point("dummy", f"{__name__}:point")], ": .* is not a potok.policies.entry.PolicyEntry"),
        ([point("dummy", "tests.no_such_module:ENTRY")], "does not load: ModuleNotFoundError"),
    ]
    for found, message in cases:
        with pytest.raises(PolicyRegistryError, match=message):
            plugins(frozenset({"cors"}), found=found)


def test_every_built_in_entry_is_complete():
    for entry in BUILT_IN:
        assert isinstance(entry, PolicyEntry)
        assert entry.config.model_config.get("extra") == "forbid", entry.name


def test_a_route_pipeline_follows_the_run_order():
    from potok.runtime import Runtime

    config = load_config_text(
        "services: {up: {targets: ['http://127.0.0.1:1']}}\n"
        "routes: [{match: {prefix: /}, service: up, policies: {"
        "headers: {response: {set: {x-a: b}}}, concurrency_limit: {max: 2}, "
        "rate_limit: {limit: 5, window: 1m}, cors: {allow_origins: ['*']}, "
        "auth_api_key: {header: X-Key}, ip_filter: {deny: [10.0.0.0/8]}}}]\n",
        {},
    )
    route = Runtime(config).routes[0]
    assert route.pipeline.names == (
        "ip_filter", "cors", "request_size", "auth_api_key",
        "rate_limit", "concurrency_limit", "headers",
    )  # fmt: skip
