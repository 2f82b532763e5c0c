"""CORS: origin matching, and the config refusing what browsers would refuse."""

from __future__ import annotations

from typing import Any

import pytest
import yaml

from potok.config.loader import ConfigError, load_config_text
from potok.policies.cors.config import CorsConfig
from potok.policies.cors.policy import OriginMatcher


@pytest.mark.parametrize(
    ("origin", "allowed"),
    [
        ("http://localhost:5173", True),
        ("HTTP://LOCALHOST:5173", True),
        ("http://localhost:5174", False),
        ("https://app.example.com", True),
        ("https://a.b.example.com", True),
        ("https://example.com", False),  # the pattern needs a subdomain
        ("http://app.example.com", False),  # scheme matters
        ("https://app.example.com:8443", False),  # so does the port
        ("https://evilexample.com", False),
        ("https://app.example.com.evil.net", False),
        ("null", False),
    ],
)
def test_origin_matching(origin: str, allowed: bool) -> None:
    config = CorsConfig(allow_origins=("http://localhost:5173", "https://*.example.com"))
    assert OriginMatcher(config.allow_origins).allows(origin) is allowed


def problems(cors: dict[str, Any], methods: list[str] | None = None) -> list[tuple[str, str]]:
    match: dict[str, Any] = {"prefix": "/"}
    if methods is not None:
        match["methods"] = methods
    doc = {
        "services": {"svc": {"targets": ["http://127.0.0.1:9001"]}},
        "routes": [{"match": match, "service": "svc", "policies": {"cors": cors}}],
    }
    with pytest.raises(ConfigError) as info:
        load_config_text(yaml.safe_dump(doc), env={})
    return info.value.problems


@pytest.mark.parametrize(
    ("cors", "path", "message"),
    [
        (
            {"allow_origins": ["*"], "allow_credentials": True},
            "routes[0].policies.cors.allow_origins",
            "cannot be combined with allow_credentials",
        ),
        (
            {
                "allow_origins": ["https://a.test"],
                "allow_headers": ["*"],
                "allow_credentials": True,
            },
            "routes[0].policies.cors.allow_headers",
            "cannot be combined",
        ),
        ({"allow_origins": []}, "routes[0].policies.cors.allow_origins", "at least 1"),
        ({"allow_origins": ["app.example.com"]}, "routes[0].policies.cors.allow_origins", "scheme"),
        (
            {"allow_origins": ["https://a.test/path"]},
            "routes[0].policies.cors.allow_origins",
            "path",
        ),
        (
            {"allow_origins": ["https://*.com"]},
            "routes[0].policies.cors.allow_origins",
            "first label",
        ),
        (
            {"allow_origins": ["https://a.*.example.com"]},
            "routes[0].policies.cors.allow_origins",
            "first label",
        ),
        (
            {"allow_origins": ["https://a.test"], "max_age": -1},
            "routes[0].policies.cors.max_age",
            "0",
        ),
        ({}, "routes[0].policies.cors.allow_origins", "required"),
    ],
)
def test_bad_cors_config(cors: dict[str, Any], path: str, message: str) -> None:
    found = problems(cors)
    assert [p for p, _ in found] == [path]
    assert message in found[0][1]


def test_route_with_methods_needs_options_for_preflight() -> None:
    (problem,) = problems({"allow_origins": ["https://a.test"]}, methods=["POST"])
    assert "routes[0].match.methods: add OPTIONS" in problem[1]


def test_credentials_with_explicit_origins_is_fine() -> None:
    config = CorsConfig(allow_origins=("http://localhost:5173",), allow_credentials=True)
    assert config.allow_credentials


def test_demo_config_has_the_default_limit_and_a_front_end_allow_list() -> None:
    from pathlib import Path

    import potok
    from potok.config.loader import load_config

    demo = Path(potok.__file__).parent / "demo" / "potok-demo.yaml"
    config = load_config(
        demo, env={"POTOK_DEMO_JWT_SECRET": "cors-test-demo-secret-0123456789abcdef"}
    )
    (limit,) = config.policies.rate_limit.effective_limits()
    assert (limit.limit, limit.window, limit.key) == (100, 60.0, "ip")
    assert config.policies.cors.allow_origins == ("http://localhost:5173",)
    assert config.policies.cors.allow_credentials
