"""The process-wide Bitrix24 client: one pooled HTTP client, one limiter, many portal connections.

async with BitrixClient() as client:
    portal = client.portal(WebhookAuth("https://example.bitrix24.com/rest/1/abc123/"))
    contact_id = await portal.call("crm.contact.add", {"fields": {"NAME": "Ann"}})
"""

from __future__ import annotations

import random
from types import TracebackType

import httpx

from .auth import Auth, LocalRefreshLock, RefreshLock, TokenLoader, TokenSaver
from .gate import Gate
from .limiter import Limiter, Limits, MemoryLimiter
from .policy import BatchSettings, RetryPolicy
from .portal import Portal
from .refresh import AuthLost, TokenKeeper
from .sender import Sender
from .transport import DomainChanged, Transport

USER_AGENT = "b24bridge/0.1 (+https://github.com/b24bridge)"


class BitrixClient:
    def __init__(
        self,
        *,
        limiter: Limiter | None = None,
        refresh_lock: RefreshLock | None = None,
        retry: RetryPolicy | None = None,
        batching: BatchSettings | None = None,
        timeout: httpx.Timeout | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        seed: int | None = None,
    ) -> None:
        self.limiter: Limiter = limiter or MemoryLimiter()
        self.refresh_lock: RefreshLock = refresh_lock or LocalRefreshLock()
        self.retry = retry or RetryPolicy()
        self.batching = batching or BatchSettings()
        self.rng = random.Random(seed)
        # The portal's own wall-clock limit for one request is 60 s; reads get a little more. An idle connection is
        # let go before common servers close theirs (uvicorn: 5 s): reusing one the server is closing turns a write
        # into an uncertain one (the request may or may not have been read).
        self.http = httpx.AsyncClient(
            timeout=timeout or httpx.Timeout(connect=5.0, read=65.0, write=15.0, pool=30.0),
            limits=httpx.Limits(max_connections=200, max_keepalive_connections=50, keepalive_expiry=4.0),
            headers={"User-Agent": USER_AGENT, "Accept": "application/json"},
            follow_redirects=False,
            transport=transport,
        )

    def portal(
        self,
        auth: Auth,
        *,
        key: str | None = None,
        limits: Limits | None = None,
        on_tokens: TokenSaver | None = None,
        load_tokens: TokenLoader | None = None,
        on_domain_change: DomainChanged | None = None,
        on_auth_lost: AuthLost | None = None,
    ) -> Portal:
        """A connection to one portal. ``key`` names it for limits and locks (member_id; domain by default).

        The callbacks are how persistence reaches the client: ``on_tokens`` stores a refreshed pair before it is
        used, ``load_tokens`` reads what another process stored, ``on_domain_change`` follows a renamed portal,
        ``on_auth_lost`` hears that the refresh token was refused.
        """
        key = key or auth.domain
        tokens = TokenKeeper(
            self.http,
            auth,
            key,
            self.refresh_lock,
            on_tokens=on_tokens,
            load_tokens=load_tokens,
            on_auth_lost=on_auth_lost,
        )
        sender = Sender(
            Transport(self.http, auth, key, on_domain_change),
            Gate(self.limiter, key, limits or Limits()),
            tokens,
            self.retry,
            self.rng,
        )
        return Portal(sender, self.batching)

    async def aclose(self) -> None:
        await self.http.aclose()

    async def __aenter__(self) -> BitrixClient:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()
