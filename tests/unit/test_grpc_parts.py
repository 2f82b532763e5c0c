"""gRPC route parts: the grpc-timeout grammar, the status mapping, grpc-message encoding,
the content types taken for gRPC, and the config rules of gRPC routes."""

from __future__ import annotations

import pytest
from h2.errors import ErrorCodes
from pydantic import ValidationError

from potok.config.models import GatewayConfig
from potok.grpc import status
from potok.grpc.timeout import BadTimeout, format_timeout, parse_timeout


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        (b"1H", 3600.0),
        (b"2M", 120.0),
        (b"30S", 30.0),
        (b"250m", 0.25),
        (b"1500u", 0.0015),
        (b"99999999n", 0.099999999),
        (b"0S", 0.0),
    ],
)
def test_grpc_timeout_units(value, seconds):
    assert parse_timeout(value) == pytest.approx(seconds)


@pytest.mark.parametrize(
    "value",
    [b"", b"S", b"10", b"10s", b"10 S", b"-1S", b"1.5S", b"123456789S", b"+1S", b"1SS", b"\xffS"],
)
def test_malformed_grpc_timeouts_are_refused(value):
    with pytest.raises(BadTimeout):
        parse_timeout(value)


@pytest.mark.parametrize("seconds", [0.000_000_5, 0.001, 0.25, 1.0, 59.9, 3600.0, 10**9])
def test_formatted_timeouts_parse_back_within_a_unit_and_fit_eight_digits(seconds):
    value = format_timeout(seconds)
    assert len(value) <= 9
    parsed = parse_timeout(value)
    assert parsed <= max(seconds, 1e-9) * 1.000_001
    assert parsed >= min(seconds * 0.99, 99_999_999 * 3600)


def test_a_passed_deadline_is_still_a_valid_timeout():
    assert format_timeout(-1.0) == b"1n"


@pytest.mark.parametrize(
    ("http", "code"),
    [
        (400, status.INTERNAL),
        (401, status.UNAUTHENTICATED),
        (403, status.PERMISSION_DENIED),
        (404, status.UNIMPLEMENTED),
        (413, status.RESOURCE_EXHAUSTED),
        (429, status.RESOURCE_EXHAUSTED),
        (502, status.UNAVAILABLE),
        (503, status.UNAVAILABLE),
        (504, status.DEADLINE_EXCEEDED),
        (500, status.INTERNAL),
        (507, status.INTERNAL),
        (418, status.UNKNOWN),
    ],
)
def test_gateway_statuses_map_to_grpc_codes(http, code):
    assert status.status_for_http(http) == code


def test_resets_map_as_the_grpc_spec_says():
    assert status.status_for_reset(ErrorCodes.REFUSED_STREAM) == status.UNAVAILABLE
    assert status.status_for_reset(ErrorCodes.CANCEL) == status.CANCELLED
    assert status.status_for_reset(ErrorCodes.ENHANCE_YOUR_CALM) == status.RESOURCE_EXHAUSTED
    assert status.status_for_reset(ErrorCodes.INTERNAL_ERROR) == status.INTERNAL


def test_grpc_message_is_percent_encoded_utf8():
    assert status.encode_message("plain text: ok") == b"plain text: ok"
    assert status.encode_message("100% sure\n") == b"100%25 sure%0A"
    assert status.encode_message("é") == b"%C3%A9"


@pytest.mark.parametrize(
    ("value", "grpc"),
    [
        (b"application/grpc", True),
        (b"application/grpc+proto", True),
        (b"Application/GRPC;charset=utf-8", True),
        (b"application/grpc-web", False),
        (b"application/grpc-web+proto", False),
        (b"application/json", False),
        (None, False),
    ],
)
def test_grpc_content_types(value, grpc):
    assert status.is_grpc_content_type(value) is grpc


def _config(*routes: dict[str, object], **service: object) -> GatewayConfig:
    return GatewayConfig.model_validate(
        {
            "services": {
                "g": {"targets": ["http://127.0.0.1:1"], **service},
                "h": {"targets": ["http://127.0.0.1:2"]},
            },
            "routes": list(routes),
        }
    )


def test_a_service_serves_grpc_routes_or_http_routes_not_both():
    grpc_route = {"match": {"prefix": "/a.B/"}, "service": "g", "grpc": True}
    http_route = {"match": {"prefix": "/http"}, "service": "g"}
    assert _config(grpc_route).routes[0].grpc
    with pytest.raises(ValidationError, match=r"routes\[1\]: service 'g' serves the gRPC route"):
        _config(grpc_route, http_route)


def test_a_grpc_service_has_no_http_health_checks():
    grpc_route = {"match": {"prefix": "/a.B/"}, "service": "g", "grpc": True}
    with pytest.raises(ValidationError, match=r"services.g.health_check"):
        _config(grpc_route, health_check={"path": "/health"})


@pytest.mark.parametrize(
    ("extra", "field"),
    [
        ({"fallback": {"status": 200, "body": "x"}}, "answers UNAVAILABLE"),
        ({"mirror": {"service": "h"}}, "cannot be mirrored"),
    ],
)
def test_grpc_routes_refuse_http_only_features(extra, field):
    route = {"match": {"prefix": "/a.B/"}, "service": "g", "grpc": True, **extra}
    with pytest.raises(ValidationError, match=field):
        _config(route)
