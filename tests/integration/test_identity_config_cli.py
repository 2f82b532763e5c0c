"""Keys and secrets judged by the CLI: `potok check` / `potok run` refuse bad JWT keys naming the
field (no traceback), and the documented secrets rotation works command for command."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from tests.support.identity_gateway import private_pem, public_pem
from tests.support.net import free_port

BIN = str(Path(sys.executable).parent)


def potok(
    *args: str, env: dict[str, str] | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    environment = {k: v for k, v in os.environ.items() if k not in ("POTOK_CONFIG",)}
    return subprocess.run(
        [sys.executable, "-m", "potok", *args],
        capture_output=True,
        text=True,
        env={**environment, **(env or {})},
        timeout=timeout,
        check=False,
    )


def config_with_key(key: dict[str, Any]) -> dict[str, Any]:
    return {
        "server": {"host": "127.0.0.1", "port": free_port()},
        "services": {"up": {"targets": ["http://127.0.0.1:9"]}},
        "routes": [
            {
                "match": {"prefix": "/"},
                "service": "up",
                "policies": {"auth_jwt": {"issuers": [{"issuer": "https://idp", "keys": [key]}]}},
            }
        ],
    }


def write(tmp_path: Path, document: dict[str, Any]) -> Path:
    path = tmp_path / "potok.yaml"
    path.write_text(yaml.safe_dump(document))
    return path


P384 = public_pem(ec.generate_private_key(ec.SECP384R1()))
RSA_1024 = public_pem(rsa.generate_private_key(public_exponent=65537, key_size=1024))
RSA_2048 = public_pem(rsa.generate_private_key(public_exponent=65537, key_size=2048))
P256 = public_pem(ec.generate_private_key(ec.SECP256R1()))
FIELD = "routes[0].policies.auth_jwt.issuers[0].keys[0]"

BAD_KEYS = [
    ({"algorithm": "ES256", "public_key": P384}, "public_key: a P-384 EC key does not fit ES256"),
    ({"algorithm": "ES256", "public_key": RSA_2048}, "public_key: a 2048-bit RSA key does not fit"),
    ({"algorithm": "RS256", "public_key": RSA_1024}, "public_key: a 1024-bit RSA key is too weak"),
    ({"algorithm": "RS256", "public_key": P256}, "public_key: a P-256 EC key does not fit RS256"),
    ({"algorithm": "EdDSA", "public_key": P256}, "public_key: a P-256 EC key does not fit EdDSA"),
    ({"algorithm": "HS256", "secret": "0" * 32}, "secret: the secret is trivially weak"),
    ({"algorithm": "HS256", "secret": "abcd" * 8}, "secret: the secret is trivially weak"),
    (
        {"algorithm": "HS256", "secret": "k3y-" + "x1y2z3" * 4},
        "secret: HS256 needs a secret of at least 32 bytes (got 28)",
    ),
    (
        {"algorithm": "HS384", "secret": "an-hs384-secret-0123456789abcdefghijk"},
        "secret: HS384 needs a secret of at least 48 bytes (got 37)",
    ),
    ({"algorithm": "RS256", "public_key_file": "/nonexistent/key.pem"}, "public_key_file: cannot"),
]


@pytest.mark.parametrize(("key", "message"), BAD_KEYS)
def test_check_refuses_a_key_that_does_not_fit_naming_the_field(tmp_path, key, message):
    result = potok("check", "--config", str(write(tmp_path, config_with_key(key))))
    assert result.returncode != 0
    assert f"{FIELD}: {message}" in result.stdout + result.stderr, result
    assert "Traceback" not in result.stdout + result.stderr


def test_check_accepts_keys_that_fit(tmp_path):
    for key in (
        {"algorithm": "ES256", "public_key": P256},
        {"algorithm": "RS256", "public_key": RSA_2048},
        {"algorithm": "HS256", "secret": "a-good-random-looking-secret-0123456789"},
    ):
        result = potok("check", "--config", str(write(tmp_path, config_with_key(key))))
        assert result.returncode == 0, result


@pytest.mark.parametrize(
    "signing",
    [
        {"algorithm": "ES256", "private_key": private_pem(ec.generate_private_key(ec.SECP384R1()))},
        {
            "algorithm": "RS256",
            "private_key": private_pem(
                rsa.generate_private_key(public_exponent=65537, key_size=1024)
            ),
        },
        {"algorithm": "HS256", "secret": "\u0000" * 32},
        {"algorithm": "HS256", "secret": "0" * 32},
    ],
)
def test_run_with_a_bad_signing_key_says_why_and_exits(tmp_path, signing):
    document = config_with_key({"algorithm": "ES256", "public_key": P256})
    document["database"] = {"url": f"sqlite:///{tmp_path}/identity.db"}
    document["auth"] = {"token_service": {"enabled": True, "signing": signing}}
    path = write(tmp_path, document)
    result = potok("run", "--config", str(path), timeout=30)
    output = result.stdout + result.stderr
    assert result.returncode != 0
    assert "auth.token_service.signing" in output, output
    assert "Traceback" not in output and len(output.splitlines()) < 10, output


# Item 24: the rotation docs/identity.md describes, command for command -----------------------


def sh(script: str, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    """Run shell lines as an operator would, with this venv's `potok` on PATH."""
    environment = {k: v for k, v in os.environ.items() if k != "POTOK_SECRET_KEY"}
    environment["PATH"] = f"{BIN}:{environment.get('PATH', '')}"
    return subprocess.run(
        ["bash", "-euo", "pipefail", "-c", script],
        capture_output=True,
        text=True,
        env=environment,
        cwd=tmp_path,
        timeout=120,
        check=False,
    )


def test_the_documented_secret_rotation_works(tmp_path):
    docs = (Path(__file__).parents[2] / "docs" / "identity.md").read_text()
    # The commands as the docs print them.
    assert "export POTOK_SECRET_KEY=$(potok secrets new-key)" in docs
    assert "potok secrets encrypt 's3cret-upstream-key'" in docs
    assert 'POTOK_SECRET_KEY="new=$K2,old=$K1"' in docs
    (tmp_path / "template.yaml").write_text(
        "services:\n  billing:\n    targets: [http://127.0.0.1:9]\n"
        "    api_key: {header: X-Service-Key, value: '@VALUE@'}\n"
        "routes:\n  - {match: {prefix: /}, service: billing}\n"
    )
    script = """
export POTOK_SECRET_KEY=$(potok secrets new-key)           # 32 bytes, hex (base64 also accepted)
K1=$POTOK_SECRET_KEY
OLD=$(potok secrets encrypt 's3cret-upstream-key')
sed "s|@VALUE@|$OLD|" template.yaml > potok.yaml
potok check --config potok.yaml
K2=$(potok secrets new-key)
export POTOK_SECRET_KEY="new=$K2,old=$K1"
echo "old-value: $(potok secrets decrypt "$OLD")"
potok check --config potok.yaml
NEW=$(potok secrets encrypt 's3cret-upstream-key')
echo "new-envelope: $NEW"
sed "s|@VALUE@|$NEW|" template.yaml > potok.yaml
export POTOK_SECRET_KEY="new=$K2"
echo "new-value: $(potok secrets decrypt "$NEW")"
potok check --config potok.yaml
"""
    result = sh(script, tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "old-value: s3cret-upstream-key" in result.stdout
    assert "new-value: s3cret-upstream-key" in result.stdout
    assert "new-envelope: enc:v1:new:" in result.stdout


def test_a_value_under_a_dropped_key_names_the_ids_available(tmp_path):
    script = """
export POTOK_SECRET_KEY=$(potok secrets new-key)
OLD=$(potok secrets encrypt 'x')
export POTOK_SECRET_KEY="new=$(potok secrets new-key)"
potok secrets decrypt "$OLD"
"""
    result = sh(script, tmp_path)
    assert result.returncode != 0
    assert "which POTOK_SECRET_KEY lacks (has: new (" in result.stderr
