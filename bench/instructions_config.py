"""Config, keys and tokens for bench/instructions.sh: the routes of bench/jwt.sh and
bench/ratelimit.sh in one gateway (same keys, same limits, same upstream).

    instructions_config.py WORK PORT UPSTREAM_PORT REDIS_PORT

With LOGGED=1 in the environment the access log (to WORK/access.log) and the metrics
are on, as in bench/proxy.sh's "Potok + access log + metrics"; otherwise both are off.
"""

from __future__ import annotations

import importlib.util
import os
import sys
import time
from pathlib import Path

import jwt
import yaml
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

ISSUER = "https://idp.bench"


def tokens(work: Path) -> tuple[str, str]:
    """Write hs.token and rs.token; return the HMAC secret and the RSA public key (PEM)."""
    secret = "bench-secret-" + "x" * 40
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    public = (
        key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )
    now = int(time.time())
    claims = {"iss": ISSUER, "aud": "bench", "sub": "user-1", "iat": now, "exp": now + 3600,
              "roles": ["reader"], "org": "acme"}  # fmt: skip
    (work / "hs.token").write_text(jwt.encode(claims, secret, "HS256", headers={"kid": "hs"}))
    (work / "rs.token").write_text(jwt.encode(claims, key, "RS256", headers={"kid": "rs"}))
    return secret, public


# Every prefix has the same length: the path's length alone moves the count (routing,
# the dot-segment check, parsing), and the routes must differ only in their policies.
def route(name: str, prefix: str, policies: dict[str, object] | None = None) -> dict[str, object]:
    entry: dict[str, object] = {"name": name, "match": {"prefix": prefix}, "service": "bench"}
    if policies is not None:
        entry["policies"] = policies
    return entry


def main() -> None:
    work, port, upstream, redis_port = Path(sys.argv[1]), *map(int, sys.argv[2:5])
    secret, public = tokens(work)
    issuer = {
        "issuer": ISSUER,
        "audiences": ["bench"],
        "keys": [
            {"kid": "hs", "algorithm": "HS256", "secret": secret},
            {"kid": "rs", "algorithm": "RS256", "public_key": public},
        ],
    }
    jwt_policy = {"auth_jwt": {"issuers": [issuer]}}
    sealed = {"auth_jwt": {"issuers": [issuer], "forward_token": False}}
    sliding = {"limit": 10000, "window": "250ms"}  # far above what the run sends
    bucket = {"limit": 1000000, "window": "1s", "algorithm": "token_bucket"}
    logged = os.environ.get("LOGGED", "0") == "1"
    # Only where the Potok measured has the policy: a baseline from an older checkout
    # (POTOK_SRC) must still start.
    compress = (
        [route("compress", "/cmp/", {"compress": {}})]
        if importlib.util.find_spec("potok.policies.compress") is not None
        else []
    )
    # A 90/10 weighted route (bench/traffic.sh): two services on the same upstream, so that
    # only the choice of a variant differs from `open`.
    # A route mirrored at 100 % to it, and an aggregation of three calls to `bench`.
    weighted = (
        [
            {
                "name": "weighted",
                "match": {"prefix": "/wgt/"},
                "services": [{"name": "bench", "weight": 90}, {"name": "bench-v2", "weight": 10}],
            },
            {
                "name": "mirrored",
                "match": {"prefix": "/mir/"},
                "service": "bench",
                "mirror": {"service": "bench-v2", "max_in_flight": 1000},
            },
        ]
        if importlib.util.find_spec("potok.traffic.split") is not None
        else []
    )
    if importlib.util.find_spec("potok.traffic.aggregate") is not None:
        calls = [{"service": "bench", "path": f"/{key}", "key": key} for key in "abc"]
        weighted.append(
            {"name": "aggregate", "match": {"path": "/agg/x"}, "aggregate": {"calls": calls}}
        )
    services: dict[str, object] = {"bench": {"targets": [f"http://127.0.0.1:{upstream}"]}}
    if weighted:
        services["bench-v2"] = {"targets": [f"http://127.0.0.1:{upstream}"]}
    # TRACING_RATIO=0.01 (with TRACING_ENDPOINT, set by instructions.sh): tracing on.
    tracing = (
        {
            "enabled": True,
            "sample_ratio": float(os.environ["TRACING_RATIO"]),
            "endpoint": os.environ["TRACING_ENDPOINT"],
        }
        if os.environ.get("TRACING_RATIO")
        else {"enabled": False}
    )
    config = {
        "tracing": tracing,
        "server": {
            "host": "127.0.0.1",
            "port": port,
            "timeouts": {"shutdown_grace": "2s"},
            # Under callgrind on a busy machine the loop lags by seconds: never shed (the
            # lag is still sampled, as with the default, so the work counted is the same; a
            # heavier route, compress, got 503s).
            "overload": {"max_loop_lag": "1h"},
        },
        "logging": {
            "level": "warning",
            "access_log": {"enabled": logged, "path": str(work / "access.log")},
        },
        "metrics": {"enabled": logged},
        "redis": {"url": f"redis://127.0.0.1:{redis_port}/0"},
        "services": services,
        "routes": [
            route("hs256", "/hs2/", jwt_policy),
            route("hs256_sealed", "/hsf/", sealed),
            route("rs256", "/rs2/", jwt_policy),
            route("memory", "/mem/", {"rate_limit": sliding}),
            route("memory_noheaders", "/mnh/", {"rate_limit": {**sliding, "headers": False}}),
            route("memory_bucket", "/mtb/", {"rate_limit": bucket}),
            route("redis", "/red/", {"rate_limit": {**sliding, "store": "redis"}}),
            route("redis_bucket", "/rtb/", {"rate_limit": {**bucket, "store": "redis"}}),
            route("open", "/opn/"),
            # The upstream answers this one (and compress) with 4 KiB of JSON (bench/lib.sh).
            route("json4k", "/j4k/"),
            *compress,
            *weighted,
        ],
    }  # fmt: skip
    (work / "potok.yaml").write_text(yaml.safe_dump(config, sort_keys=False))


if __name__ == "__main__":
    main()
