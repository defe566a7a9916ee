"""How a portal connection authenticates: an incoming-webhook URL or an OAuth application's tokens."""

from __future__ import annotations

import asyncio
import ipaddress
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, Protocol
from urllib.parse import urlsplit, urlunsplit

from .errors import ConfigurationError

DEFAULT_OAUTH_SERVER = "https://oauth.bitrix.info"


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_url(url: str, what: str) -> str:
    """Only https, except plain http to a loopback address (the sandbox on this machine)."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigurationError(f"{what} must be an http(s) URL")
    if parts.scheme == "http" and not _is_loopback(parts.hostname):
        raise ConfigurationError(f"{what} must use https (plain http is accepted only for loopback addresses)")
    return url


def with_host(url: str, netloc: str) -> str:
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


@dataclass
class WebhookAuth:
    """``https://portal.bitrix24.com/rest/{user_id}/{code}/``: the credential is in the path."""

    url: str

    def __post_init__(self) -> None:
        self.url = check_url(self.url.rstrip("/") + "/", "webhook URL")
        segments = [s for s in urlsplit(self.url).path.split("/") if s]
        if len(segments) < 3 or segments[-3] != "rest":
            raise ConfigurationError("webhook URL must look like https://<portal>/rest/<user_id>/<code>/")

    @property
    def base(self) -> str:
        return self.url

    @property
    def domain(self) -> str:
        return urlsplit(self.url).netloc

    def moved(self, netloc: str) -> None:
        self.url = with_host(self.url, netloc)


@dataclass
class TokenPair:
    """What the OAuth server hands out; ``raw`` keeps the full answer for whoever persists it."""

    access_token: str
    refresh_token: str
    expires_at: float | None = None
    client_endpoint: str | None = None
    member_id: str | None = None
    scope: str | None = None
    raw: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_answer(cls, body: dict[str, Any]) -> TokenPair:
        expires = body.get("expires")
        if expires is None and body.get("expires_in") is not None:
            expires = time.time() + float(body["expires_in"])
        return cls(
            access_token=str(body["access_token"]),
            refresh_token=str(body["refresh_token"]),
            expires_at=float(expires) if expires is not None else None,
            client_endpoint=body.get("client_endpoint"),
            member_id=body.get("member_id"),
            scope=body.get("scope"),
            raw=body,
        )

    def __repr__(self) -> str:  # tokens never end up in logs or tracebacks
        return f"TokenPair(member_id={self.member_id!r}, expires_at={self.expires_at!r})"


TokenSaver = Callable[[TokenPair], Awaitable[None]]
TokenLoader = Callable[[], Awaitable[TokenPair | None]]


@dataclass
class OAuthAuth:
    """An OAuth application's access to one portal."""

    client_id: str
    client_secret: str
    tokens: TokenPair
    client_endpoint: str
    oauth_server: str = DEFAULT_OAUTH_SERVER

    def __post_init__(self) -> None:
        self.client_endpoint = check_url(self.client_endpoint.rstrip("/") + "/", "client endpoint")
        self.oauth_server = check_url(self.oauth_server.rstrip("/"), "OAuth server URL")

    @property
    def base(self) -> str:
        return self.client_endpoint

    @property
    def domain(self) -> str:
        return urlsplit(self.client_endpoint).netloc

    @property
    def token_url(self) -> str:
        return f"{self.oauth_server}/oauth/token/"

    def moved(self, netloc: str) -> None:
        self.client_endpoint = with_host(self.client_endpoint, netloc)

    def __repr__(self) -> str:
        return f"OAuthAuth(client_id={self.client_id!r}, client_endpoint={self.client_endpoint!r})"


Auth = WebhookAuth | OAuthAuth


class RefreshLock(Protocol):
    """Mutual exclusion for token refresh of one portal; across processes when backed by Redis."""

    def hold(self, key: str) -> Any:  # an async context manager
        ...


class LocalRefreshLock:
    """Within one process: an asyncio lock per portal."""

    def __init__(self) -> None:
        self._locks: dict[str, asyncio.Lock] = {}

    @asynccontextmanager
    async def hold(self, key: str) -> AsyncIterator[None]:
        lock = self._locks.setdefault(key, asyncio.Lock())
        async with lock:
            yield
