"""`cache.invalidate` rules: config checks that name the field, and the tags an event fills."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from potok.config.models import GatewayConfig
from potok.policies.cache.bus_config import InvalidateRuleConfig
from potok.policies.cache.bus_purge import compile_rule
from potok.realtime.events import BadEvent, Event, make_event


def rule(**fields: object) -> InvalidateRuleConfig:
    return InvalidateRuleConfig.model_validate(fields)


def event(channel: str, kind: str = "task:updated", data: object = None) -> Event:
    return Event("id1", channel, kind, data, 0.0)


def test_tags_from_channel_placeholders_and_event_data() -> None:
    compiled = compile_rule(
        rule(channel="org:{org}:tasks", tags=["tasks:{org}", "org{org}-task:{data.task.id}"])
    )
    assert compiled.tags_for(event("org:acme:tasks", data={"task": {"id": 7}})) == [
        "tasks:acme",
        "orgacme-task:7",
    ]
    # Without the data field, only the tags that do not need it.
    assert compiled.tags_for(event("org:acme:tasks", data={})) == ["tasks:acme"]
    assert compiled.tags_for(event("org:acme:tasks", data={"task": {"id": [1]}})) == ["tasks:acme"]
    assert compiled.tags_for(event("org:acme:other")) == []
    assert compiled.tags_for(event("org:a:b:tasks")) == []  # a placeholder is one segment


def test_event_types_and_wildcards() -> None:
    compiled = compile_rule(rule(channel="shop.*", events=["price:changed"], tags=["prices"]))
    assert compiled.tags_for(event("shop.eu.items", "price:changed")) == ["prices"]
    assert compiled.tags_for(event("shop.eu.items", "price:viewed")) == []


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"channel": "org:{org}:tasks", "tags": ["tasks:{team}"]}, "{team}"),
        ({"channel": "org:{org}:tasks", "tags": ["tasks:{org"]}, "unclosed"),
        ({"channel": "org:{org}:{org}", "tags": ["x"]}, "twice"),
        ({"channel": "org org", "tags": ["x"]}, "pattern"),
        ({"channel": "org:{org}", "tags": []}, "at least 1"),
        ({"channel": "a", "tags": ["x"], "events": ["bad type!"]}, "event type"),
    ],
)
def test_bad_rules_name_the_problem(fields: dict[str, object], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        rule(**fields)


def test_rules_need_the_realtime_bus_and_known_routes() -> None:
    base = {
        "services": {"up": {"targets": ["http://127.0.0.1:1"]}},
        "routes": [{"name": "r", "match": {"prefix": "/"}, "service": "up"}],
    }
    rules = {"invalidate": [{"channel": "a", "tags": ["x"], "routes": ["nope"]}]}
    with pytest.raises(ValidationError) as caught:
        GatewayConfig.model_validate({**base, "cache": rules})
    text = str(caught.value)
    assert "cache.invalidate: needs the `realtime:` section" in text
    assert "cache.invalidate[0].routes: no route 'nope'" in text


def test_publishers_cannot_use_the_gateways_own_channels() -> None:
    with pytest.raises(BadEvent, match="gateway's own"):
        make_event("_potok.cache.purge", "cache.purge", {})
    assert make_event("_potok.cache.purge", "cache.purge", {}, reserved=True).channel
