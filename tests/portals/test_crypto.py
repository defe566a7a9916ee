"""Encryption at rest, key rotation, the generated development key and the production start-up check."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest
import structlog
from pydantic import SecretStr

from b24bridge.portals import crypto
from b24bridge.settings import Settings


def _ring(text: str) -> crypto.Keyring:
    return crypto.Keyring(tuple(crypto.parse_keys(text)))


def test_encrypt_decrypt_and_rotation() -> None:
    old, new = crypto.new_key(), crypto.new_key()
    before = _ring(f"old:{old}")
    secret = "s6p6eclrvim6da22ft9ch94ekreb52lv"
    sealed = before.encrypt(secret, "m1:access")
    assert sealed.startswith("old:") and secret not in sealed
    assert before.encrypt(secret, "m1:access") != sealed  # a fresh nonce every time
    mac = before.mac("application_token", "app-token")

    after = _ring(f"new:{new},old:{old}")  # rotated: new encrypts, old still decrypts
    assert after.decrypt(sealed, "m1:access") == secret
    assert after.needs_rotation(sealed)
    resealed = after.encrypt(secret, "m1:access")
    assert resealed.startswith("new:") and not after.needs_rotation(resealed)
    assert after.check_mac("application_token", "app-token", mac)
    assert not after.check_mac("application_token", "other", mac)
    assert not after.check_mac("oauth_state", "app-token", mac)  # MACs of one purpose do not pass for another

    retired = _ring(f"new:{new}")
    with pytest.raises(crypto.DecryptError, match="'old'") as info:
        retired.decrypt(sealed, "m1:access")
    assert secret not in str(info.value)
    assert not retired.check_mac("application_token", "app-token", mac)
    with pytest.raises(crypto.DecryptError):
        after.decrypt(sealed, "m2:access")  # bound to its row and field: cannot be moved to another portal
    with pytest.raises(crypto.DecryptError):
        after.decrypt(sealed[:-2] + ("AA" if sealed[-2:] != "AA" else "BB"), "m1:access")


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("", "no keys"),
        ("nokid", "kid:base64url-key"),
        ("k1:c2hvcnQ", "32 bytes"),
        ("k1:!!!!", "base64"),
        (f"k1:{crypto.new_key()},k1:{crypto.new_key()}", "twice"),
    ],
)
def test_bad_keys_are_named_not_shown(text: str, problem: str) -> None:
    with pytest.raises(crypto.KeyConfigError, match=problem) as info:
        crypto.parse_keys(text)
    assert str(info.value).startswith("B24BRIDGE_ENCRYPTION_KEYS: ")
    assert "\n" not in str(info.value)


def test_development_generates_a_key_once(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path / "data", environment="development")
    with structlog.testing.capture_logs() as logs:
        ring = crypto.keyring(settings)
    key_file = tmp_path / "data" / crypto.KEY_FILE
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert [entry.get("path") for entry in logs] == [str(key_file)]
    # Asked again (as a new process would), the same key is read back and no other is generated.
    with structlog.testing.capture_logs() as logs:
        again = crypto.keyring(settings)
    assert logs == [] and again.keys == ring.keys


def test_production_without_a_key_is_refused(tmp_path: Path) -> None:
    with pytest.raises(crypto.KeyConfigError):
        crypto.keyring(Settings(data_dir=tmp_path, environment="production"))
    env = {k: v for k, v in os.environ.items() if not k.startswith("B24BRIDGE_")}
    env |= {"B24BRIDGE_ENVIRONMENT": "production", "B24BRIDGE_DATA_DIR": str(tmp_path)}
    for command in (["serve", "--port", "1"], ["worker"]):
        done = subprocess.run(
            [sys.executable, "-m", "b24bridge.cli", *command],
            env=env,
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode == 2, done.stderr
        lines = done.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("B24BRIDGE_ENCRYPTION_KEYS: is required in production")
    assert not (tmp_path / crypto.KEY_FILE).exists()


def test_keys_generate_prints_a_key_the_service_accepts(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("B24BRIDGE_")}
    command = [sys.executable, "-m", "b24bridge.cli", "keys", "generate", "--kid", "k7"]
    first, second = (subprocess.run(command, env=env, capture_output=True, text=True, timeout=60) for _ in "ab")
    assert first.returncode == 0, first.stderr
    entry = first.stdout.strip()
    assert entry.startswith("k7:") and entry != second.stdout.strip()
    ring = crypto.keyring(Settings(data_dir=tmp_path, encryption_keys=SecretStr(entry), environment="production"))
    assert ring.decrypt(ring.encrypt("token")) == "token"
    bad = subprocess.run([*command[:-1], "no:colons"], env=env, capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and bad.stderr.strip()
