"""Aggregated routes: the config rules, path templates and the composition of answers."""

from __future__ import annotations

import re
from typing import Any

import orjson
import pytest
from pydantic import ValidationError

from potok.config.models import RouteConfig, ServiceConfig
from potok.traffic.aggregate import AggregateStage, Call, _Outcome
from potok.traffic.config import AggregateCall
from potok.upstream.service import Service


def route(calls: list[dict[str, Any]], **extra: Any) -> RouteConfig:
    return RouteConfig.model_validate(
        {"match": {"path": "/d/{id}"}, "aggregate": {"calls": calls}, **extra}
    )


def test_names_default_to_the_key_then_the_service() -> None:
    config = route(
        [
            {"service": "users", "path": "/u", "key": "user"},
            {"service": "tasks", "path": "/t"},
            {"service": "tasks", "path": "/t2", "name": "more"},
        ]
    )
    assert config.aggregate is not None
    assert [call.label for call in config.aggregate.calls] == ["user", "tasks", "more"]
    assert config.service_names == ("users", "tasks")
    assert config.primary_service == "users"


@pytest.mark.parametrize(
    ("calls", "extra", "message"),
    [
        ([{"service": "a", "path": "/x"}, {"service": "a", "path": "/y"}], {}, "second call"),
        ([{"service": "a", "path": "/x/{nope}"}], {}, "calls[0].path: uses nope"),
        ([{"service": "a", "path": "x"}], {}, "calls[0].path"),
        ([{"service": "a", "path": "/x"}], {"service": "a"}, "not with service"),
        ([{"service": "a", "path": "/x"}], {"rewrite": "/y"}, "not with rewrite"),
        ([{"service": "a", "path": "/x"}], {"grpc": True}, "not with grpc"),
        ([], {}, "at least 1"),
    ],
)
def test_refused_configs_say_why(
    calls: list[dict[str, Any]], extra: dict[str, Any], message: str
) -> None:
    with pytest.raises(ValidationError, match=re.escape(message)):
        route(calls, **extra)


def test_methods_other_than_get_head_and_options_are_refused() -> None:
    with pytest.raises(
        ValidationError, match=re.escape("GET and HEAD only; match.methods also has POST")
    ):
        RouteConfig.model_validate(
            {
                "match": {"path": "/d", "methods": ["GET", "POST"]},
                "aggregate": {"calls": [{"service": "a", "path": "/x"}]},
            }
        )
    RouteConfig.model_validate(
        {
            "match": {"path": "/d", "methods": ["GET", "HEAD", "OPTIONS"]},
            "aggregate": {"calls": [{"service": "a", "path": "/x"}]},
        }
    )


def _service() -> Service:
    return Service("s", ServiceConfig.model_validate({"targets": ["http://127.0.0.1:9"]}))


def _call(**config: Any) -> Call:
    return Call(AggregateCall.model_validate(config), _service(), None, "r", None)


def test_path_templates_take_the_route_parameters() -> None:
    call = _call(service="s", path="/orgs/{org}/users/{id}/")
    assert call.path({"org": "acme", "id": "42"}) == b"/orgs/acme/users/42/"
    assert _call(service="s", path="/").path(None) == b"/"
    assert _call(service="s", path="/static/list").path({"id": "1"}) == b"/static/list"


def test_answers_compose_in_the_order_of_the_calls_and_a_later_one_wins() -> None:
    calls = [
        _call(service="s", path="/a"),
        _call(service="s", path="/b", key="b"),
        _call(service="s", path="/c", name="c"),
        _call(service="s", path="/d", key="d", required=False),
    ]
    stage = AggregateStage(calls, frozenset(), "r", None)
    sent: list[tuple[int, bytes, tuple[tuple[bytes, bytes], ...]]] = []

    class _Exchange:
        target_name = ""

        def respond(self, status: int, body: bytes, content_type: bytes, headers: Any = ()) -> None:
            sent.append((status, body, headers))

    outcomes = [
        _Outcome("ok", {"x": 1, "y": 1}),
        _Outcome("ok", [1, 2]),
        _Outcome("ok", {"y": 2}),  # merged after the first: its y wins
        _Outcome("timeout", None, 504, "late"),
    ]
    exchange = _Exchange()
    stage.answer(exchange, outcomes)  # type: ignore[arg-type]
    [(status, body, headers)] = sent
    assert status == 200
    assert orjson.loads(body) == {"x": 1, "y": 2, "b": [1, 2]}
    assert headers == ((b"X-Potok-Partial", b"d"),)
    assert exchange.target_name == "partial:d"
