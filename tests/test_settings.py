from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from b24bridge.settings import Settings, SettingsError, load_settings


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in list(os.environ):
        if name.startswith("B24BRIDGE_"):
            monkeypatch.delenv(name)
    # .env is read from the working directory; keep a developer's own file out of the tests.
    monkeypatch.chdir(tmp_path)


def test_defaults() -> None:
    settings = load_settings()
    assert settings.database_url is None
    assert settings.embedded_database
    assert settings.data_dir == Path(".b24bridge")
    assert (settings.host, settings.port) == ("127.0.0.1", 8000)
    assert settings.log_level == "INFO"
    assert settings.log_format == "auto"
    assert settings.environment == "development"
    assert settings.worker_concurrency >= 1


def test_environment_and_dotenv(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    (tmp_path / ".env").write_text("B24BRIDGE_PORT=9001\nB24BRIDGE_LOG_LEVEL=debug\n")
    monkeypatch.setenv("B24BRIDGE_DATABASE_URL", "postgresql://app:pw@db.internal:5432/b24")
    monkeypatch.setenv("B24BRIDGE_ENVIRONMENT", "Production")
    settings = load_settings()
    assert settings.port == 9001
    assert settings.log_level == "DEBUG"
    assert settings.environment == "production"
    assert str(settings.database_url) == "postgresql://app:pw@db.internal:5432/b24"
    assert not settings.embedded_database


def test_empty_variable_means_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("B24BRIDGE_DATABASE_URL", "")
    assert load_settings().database_url is None


@pytest.mark.parametrize(
    ("var", "value", "expected"),
    [
        ("B24BRIDGE_PORT", "abc", "B24BRIDGE_PORT: must be an integer between 1 and 65535 (got 'abc')"),
        ("B24BRIDGE_PORT", "70000", "B24BRIDGE_PORT: must be an integer between 1 and 65535 (got '70000')"),
        ("B24BRIDGE_LOG_LEVEL", "loud", "B24BRIDGE_LOG_LEVEL: must be one of DEBUG, INFO, WARNING, ERROR"),
        ("B24BRIDGE_LOG_FORMAT", "xml", "B24BRIDGE_LOG_FORMAT: must be one of auto, json, console"),
        ("B24BRIDGE_ENVIRONMENT", "staging", "B24BRIDGE_ENVIRONMENT: must be one of development, production"),
        ("B24BRIDGE_WORKER_CONCURRENCY", "0", "B24BRIDGE_WORKER_CONCURRENCY: must be an integer of at least 1"),
        ("B24BRIDGE_BITRIX_RETRY_ATTEMPTS", "0", "B24BRIDGE_BITRIX_RETRY_ATTEMPTS: must be an integer from 1 to 10"),
        ("B24BRIDGE_DATABASE_URL", "mysql://x@h/db", "B24BRIDGE_DATABASE_URL: must be a PostgreSQL URL"),
    ],
)
def test_one_clear_line_per_bad_setting(monkeypatch: pytest.MonkeyPatch, var: str, value: str, expected: str) -> None:
    monkeypatch.setenv(var, value)
    with pytest.raises(SettingsError) as caught:
        load_settings()
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith(expected)


def test_several_bad_settings_give_one_line_each(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("B24BRIDGE_PORT", "0")
    monkeypatch.setenv("B24BRIDGE_LOG_LEVEL", "chatty")
    with pytest.raises(SettingsError) as caught:
        load_settings()
    lines = str(caught.value).splitlines()
    assert len(lines) == 2
    assert {line.split(":")[0] for line in lines} == {"B24BRIDGE_PORT", "B24BRIDGE_LOG_LEVEL"}


def test_database_password_is_not_echoed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("B24BRIDGE_DATABASE_URL", "mysql://app:hunter2@db/b24")
    with pytest.raises(SettingsError) as caught:
        load_settings()
    assert "hunter2" not in str(caught.value)


def test_settings_object_accepts_overrides() -> None:
    assert Settings(port=1234).port == 1234


def test_cli_prints_one_line_and_exits_2(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("B24BRIDGE_")}
    env["B24BRIDGE_PORT"] = "abc"
    result = subprocess.run(
        [sys.executable, "-m", "b24bridge.cli", "serve"],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert result.stderr.strip() == "B24BRIDGE_PORT: must be an integer between 1 and 65535 (got 'abc')"
    assert "Traceback" not in result.stdout + result.stderr


def test_cli_arguments_that_are_not_text_are_one_line_and_exit_2(tmp_path: Path) -> None:
    """Bytes that are not UTF-8 reach Python as lone surrogates: they used to end in a traceback from psycopg."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("B24BRIDGE_")}
    for argv in ([b"runs", b"list", b"--portal", b"\xff"], [b"portals", b"show", b"a\xed\xa0\x80b"]):
        result = subprocess.run(
            [sys.executable.encode(), b"-m", b"b24bridge.cli", *argv], env=env, cwd=tmp_path, capture_output=True
        )
        assert result.returncode == 2, result.stderr
        position = len(argv)
        assert result.stderr.decode().strip() == f"argument {position} is not valid UTF-8 text"
        assert b"Traceback" not in result.stdout + result.stderr


@pytest.mark.parametrize(
    ("name", "value", "expected"),
    [
        ("public_url", "ftp://bridge.example.com", "B24BRIDGE_PUBLIC_URL: must be the externally reachable https://"),
        ("public_url", "http://bridge.example.com", "B24BRIDGE_PUBLIC_URL: must be the externally reachable https://"),
        ("public_url", "https://bridge.example.com/?a=1", "B24BRIDGE_PUBLIC_URL: must be the externally reachable"),
        ("redis_url", "localhost:6379", "B24BRIDGE_REDIS_URL: must be a Redis URL"),
        ("redis_url", "http://cache:6379", "B24BRIDGE_REDIS_URL: must be a Redis URL"),
        ("oauth_server", "oauth.bitrix.info", "B24BRIDGE_OAUTH_SERVER: must be the OAuth server's https URL"),
        ("oauth_server", "http://oauth.example.com", "B24BRIDGE_OAUTH_SERVER: must be the OAuth server's https URL"),
        ("retry_schedule", "5s,soon", "B24BRIDGE_RETRY_SCHEDULE: must be durations separated by commas"),
        ("retry_schedule", "5s,0s", "B24BRIDGE_RETRY_SCHEDULE: must be durations separated by commas"),
        ("forwarded_allow_ips", "proxy.local", "B24BRIDGE_FORWARDED_ALLOW_IPS: must be IP addresses or networks"),
        ("forwarded_allow_ips", " , ", "B24BRIDGE_FORWARDED_ALLOW_IPS: must be IP addresses or networks"),
    ],
)
def test_urls_and_schedules_are_checked_as_their_messages_say(name: str, value: str, expected: str) -> None:
    with pytest.raises(SettingsError) as caught:
        load_settings(**{name: value})
    assert [line[: len(expected)] for line in caught.value.problems] == [expected]


def test_accepted_urls_and_schedule() -> None:
    settings = load_settings(
        public_url="https://bridge.example.com/",
        redis_url="rediss://cache.example.com:6380/1",
        oauth_server="http://127.0.0.1:8090",
        retry_schedule="500ms, 5s,2m,1h,1d",
    )
    assert settings.public_url == "https://bridge.example.com"
    assert settings.retry_delays == (0.5, 5.0, 120.0, 3600.0, 86400.0)
    assert load_settings(public_url="http://127.0.0.1:8000").public_url == "http://127.0.0.1:8000"
    assert load_settings(forwarded_allow_ips=" 172.18.0.0/16, ::1 ").forwarded_allow_ips == "172.18.0.0/16,::1"


def test_production_needs_an_https_public_url() -> None:
    with pytest.raises(SettingsError) as caught:
        load_settings(environment="production", public_url="http://127.0.0.1:8000")
    assert caught.value.problems == [
        "B24BRIDGE_PUBLIC_URL: production needs an https:// URL (Bitrix24 calls it from the Internet)"
    ]
