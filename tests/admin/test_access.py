"""The admin door's rules on their own: who is let in without a token, sessions, CSRF tokens, where a login returns."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from b24bridge.admin.access import SESSION_TTL, AdminGate, safe_return_path
from b24bridge.portals import crypto
from b24bridge.settings import SettingsError, load_settings
from tests.admin.conftest import altered

RING = crypto.Keyring(tuple(crypto.parse_keys(f"k1:{crypto.new_key()}")))
TOKEN = "a-long-enough-admin-token-0123456789"


class Clock:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


def gate(clock: Clock | None = None, **values: Any) -> AdminGate:
    # Every setting the door reads is given, so the environment running the tests cannot change the answers.
    defaults = {"database_url": None, "environment": "development", "admin_token": None, "public_url": None}
    settings = load_settings(**{"data_dir": Path("/nonexistent"), **defaults, **values})
    return AdminGate(settings, RING, clock or Clock())


def test_the_token_must_be_long_enough() -> None:
    with pytest.raises(SettingsError) as refused:
        load_settings(admin_token="short")
    assert str(refused.value).startswith("B24BRIDGE_ADMIN_TOKEN: must be at least 24 characters")
    assert "short" not in str(refused.value)


def test_without_a_token_only_loopback_with_the_embedded_defaults() -> None:
    defaults = gate()
    assert defaults.refusal("127.0.0.1", "127.0.0.1:8000") is None
    assert defaults.refusal("::1", "[::1]:8000") is None
    assert defaults.refusal("127.0.0.1", "localhost:8000") is None
    assert defaults.refusal("203.0.113.9", "127.0.0.1:8000").status == 403  # type: ignore[union-attr]
    # DNS rebinding: a site whose name resolves to 127.0.0.1 talks to us through the operator's browser.
    assert defaults.refusal("127.0.0.1", "evil.example:8000").status == 403  # type: ignore[union-attr]
    assert defaults.refusal(None, None).status == 403  # type: ignore[union-attr]
    deployments: list[dict[str, Any]] = [{"database_url": "postgresql://db.example/b24"}, {"environment": "production"}]
    for values in deployments:
        off = gate(**values).refusal("127.0.0.1", "127.0.0.1:8000")
        assert off is not None and off.status == 404 and "B24BRIDGE_ADMIN_TOKEN" in off.message
    # With a token, where the request comes from is no longer the question: the token is.
    assert gate(admin_token=TOKEN, environment="production").refusal("203.0.113.9", "b24.example.com") is None


def test_the_token_is_compared_whole() -> None:
    door = gate(admin_token=TOKEN)
    assert door.token_matches(TOKEN)
    for wrong in (None, "", TOKEN[:-1], TOKEN + "x", TOKEN.upper()):
        assert not door.token_matches(wrong)
    assert not gate().token_matches("")  # no token configured: nothing matches


def test_a_session_is_refused_when_altered_expired_or_made_under_another_token() -> None:
    clock = Clock()
    door = gate(clock, admin_token=TOKEN)
    cookie = door.new_session()
    session = door.session(cookie)
    assert session is not None and session.expires == int(clock.now + SESSION_TTL)
    nonce, expires, mac = cookie.split(".")
    assert door.session(f"{nonce}.{int(expires) + 3600}.{mac}") is None  # a longer life, forged
    assert door.session(f"{nonce}x.{expires}.{mac}") is None
    assert door.session(f"{nonce}.{expires}.{altered(mac)}") is None
    for junk in (None, "", "a.b", "a.b.c.d", "..."):
        assert door.session(junk) is None
    assert gate(clock, admin_token=TOKEN.upper()).session(cookie) is None  # the token changed: sessions end
    clock.now += SESSION_TTL + 1
    assert door.session(cookie) is None


def test_a_csrf_token_belongs_to_its_session() -> None:
    door = gate(admin_token=TOKEN)
    mine, theirs = door.session(door.new_session()), door.session(door.new_session())
    assert mine is not None and theirs is not None
    assert door.csrf_matches(mine, door.csrf_token(mine))
    assert not door.csrf_matches(mine, door.csrf_token(theirs))
    assert not door.csrf_matches(mine, None) and not door.csrf_matches(mine, "")


def test_the_cookie_is_secure_behind_https() -> None:
    door = gate(admin_token=TOKEN, public_url="https://b24.example.com")
    assert door.secure_cookie("https", "127.0.0.1:8000")
    assert door.secure_cookie("http", "b24.example.com")  # a proxy that does not say it terminated TLS
    assert not door.secure_cookie("http", "127.0.0.1:8000")
    assert not gate(admin_token=TOKEN).secure_cookie("http", "b24.example.com")


@pytest.mark.parametrize(
    ("wanted", "kept"),
    [
        ("/admin/runs?status=dead", True),
        ("/admin/runs/12", True),
        ("//evil.example/admin", False),
        ("/\\evil.example", False),
        ("https://evil.example/admin", False),
        ("/api/runs", False),
        ("/admin\r\nSet-Cookie: x=1", False),
        ("", False),
        (None, False),
    ],
)
def test_a_login_returns_only_to_the_admin_page(wanted: str | None, kept: bool) -> None:
    assert safe_return_path(wanted, "/admin/runs") == (wanted if kept else "/admin/runs")
