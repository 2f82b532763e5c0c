"""Encrypted config values: AES-256-GCM envelopes, key rotation, and the loader hook."""

from __future__ import annotations

import base64
import os

import pytest

from potok.config.loader import ConfigError, load_config_text
from potok.identity.secrets import (
    PREFIX,
    SecretError,
    decrypt,
    encrypt,
    new_key,
    parse_keys,
)

KEY_A = "a" * 64
KEY_B = base64.b64encode(bytes(range(32))).decode()


def test_round_trip_and_fresh_nonce():
    keys = parse_keys(KEY_A)
    one, two = encrypt("s3cret value", keys), encrypt("s3cret value", keys)
    assert one.startswith(PREFIX) and one != two
    assert decrypt(one, keys) == decrypt(two, keys) == "s3cret value"


def test_key_formats_and_ids():
    keys = parse_keys(f"new={KEY_A}, {KEY_B}")
    assert keys[0].kid == "new" and len(keys[1].kid) == 8
    for bad in ("", "abc", "00" * 31, base64.b64encode(b"x" * 16).decode()):
        with pytest.raises(SecretError):
            parse_keys(bad)
    with pytest.raises(SecretError, match="twice"):
        parse_keys(f"k={KEY_A},k={KEY_A}")
    assert len(bytes.fromhex(new_key())) == 32


def test_rotation_old_values_still_decrypt():
    old = parse_keys(f"v1={KEY_B}")
    value = encrypt("rotate me", old)
    rotated = parse_keys(f"v2={KEY_A},v1={KEY_B}")
    assert decrypt(value, rotated) == "rotate me"
    assert encrypt("x", rotated).startswith(f"{PREFIX}v2:")
    with pytest.raises(SecretError, match="lacks"):
        decrypt(value, parse_keys(f"v2={KEY_A}"))


def test_wrong_key_or_tampering_is_refused():
    keys = parse_keys(f"k={KEY_A}")
    value = encrypt("payload", keys)
    with pytest.raises(SecretError, match="wrong key or tampered"):
        decrypt(value, parse_keys(f"k={KEY_B}"))
    body = value.rsplit(":", 1)[1]
    flipped = body[:-2] + ("A" if body[-2] != "A" else "B") + body[-1]
    with pytest.raises(SecretError, match="tampered"):
        decrypt(value.rsplit(":", 1)[0] + ":" + flipped, keys)
    # The key id is authenticated too: relabelling a value does not work.
    other = parse_keys(f"j={KEY_A}")
    with pytest.raises(SecretError):
        decrypt(value.replace(":k:", ":j:"), other)
    for bad in ("enc:v1:", "enc:v1:k", "enc:v1:k:!!!", "enc:v1:k:AAAA"):
        with pytest.raises(SecretError):
            decrypt(bad, keys)


def config_with(value: str) -> str:
    return f"""
services:
  up:
    targets: ["http://127.0.0.1:9"]
    api_key: {{header: X-Key, value: "{value}"}}
"""


def test_loader_decrypts_values():
    env = {"POTOK_SECRET_KEY": KEY_A}
    value = encrypt("upstream-key", parse_keys(KEY_A))
    config = load_config_text(config_with(value), env)
    assert config.services["up"].api_key.value == "upstream-key"
    # ${VAR} expansion first, then decryption.
    config = load_config_text(config_with("${UP_KEY}"), {**env, "UP_KEY": value})
    assert config.services["up"].api_key.value == "upstream-key"


def test_loader_names_the_field_on_a_bad_value():
    value = encrypt("upstream-key", parse_keys(f"k={KEY_A}"))
    with pytest.raises(ConfigError) as wrong:
        load_config_text(config_with(value), {"POTOK_SECRET_KEY": f"k={KEY_B}"})
    assert wrong.value.problems[0][0] == "services.up.api_key.value"
    assert "wrong key or tampered" in wrong.value.problems[0][1]
    with pytest.raises(ConfigError) as missing:
        load_config_text(config_with(value), {})
    assert "POTOK_SECRET_KEY is not set" in missing.value.problems[0][1]


def test_cli_round_trip(tmp_path):
    import subprocess
    import sys

    env = {**os.environ, "POTOK_SECRET_KEY": KEY_A}
    enc = subprocess.run(
        [sys.executable, "-m", "potok", "secrets", "encrypt"],
        input="hunter2\n", capture_output=True, text=True, env=env, check=True,
    )  # fmt: skip
    value = enc.stdout.strip()
    assert value.startswith(PREFIX) and "hunter2" not in value
    dec = subprocess.run(
        [sys.executable, "-m", "potok", "secrets", "decrypt", value],
        capture_output=True, text=True, env=env, check=True,
    )  # fmt: skip
    assert dec.stdout.strip() == "hunter2"
    bad = subprocess.run(
        [sys.executable, "-m", "potok", "secrets", "decrypt", value],
        capture_output=True, text=True, env={**env, "POTOK_SECRET_KEY": KEY_B}, check=False,
    )  # fmt: skip
    assert bad.returncode == 1 and "lacks" in bad.stderr
