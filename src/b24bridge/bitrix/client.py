"""The process-wide Bitrix24 client: one pooled HTTP client, one limiter, many portal connections.

async with BitrixClient() as client:
    portal = client.portal(WebhookAuth("https://example.bitrix24.com/rest/1/abc123/"))
    contact_id = await portal.call("crm.contact.add", {"fields": {"NAME": "Ann"}})
"""

from __future__ import annotations

import random
import ssl
from types import TracebackType

import httpx

from .auth import Auth, LocalRefreshLock, RefreshLock, TokenLoader, TokenSaver
from .gate import Gate
from .limiter import Limiter, Limits, MemoryLimiter
from .policy import Backlog, BatchSettings, RetryPolicy, no_backlog
from .portal import Portal
from .refresh import AuthLost, TokenKeeper
from .sender import Sender
from .transport import DomainChanged, Transport

USER_AGENT = "b24bridge/0.1 (+https://github.com/b24bridge)"


class PerHostPools(httpx.AsyncBaseTransport):
    """A connection pool per portal host, behind the one client.

    httpcore looks at every connection of a pool on every request (it asks each idle one's socket whether the server
    closed it): with one pool for hundreds of portals that walk grew with the number of portals, and was a fifth of
    what a robot run cost with 50 portals at one call a second each (py-spy, bench/tenants.py). A pool per host keeps
    each walk to that host's few connections.

    The pools share one TLS context: each building its own (loading the CA bundle) held the event loop 35 ms the first
    time a portal was called, which with 50 portals was a fifth of the service's first seconds (py-spy).
    """

    def __init__(self, limits: httpx.Limits | None = None, tls: ssl.SSLContext | None = None) -> None:
        # A portal's requests are few at once (its limiter sees to that); the OAuth server is shared by all portals.
        self.limits = limits or httpx.Limits(max_connections=100, max_keepalive_connections=10, keepalive_expiry=4.0)
        self._tls = tls
        self._pools: dict[tuple[bytes, bytes, int | None], httpx.AsyncHTTPTransport] = {}

    @property
    def tls(self) -> ssl.SSLContext:
        if self._tls is None:
            self._tls = httpx.create_ssl_context()  # built on first use: a client that never calls costs nothing
        return self._tls

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        url = request.url
        key = (url.raw_scheme, url.raw_host, url.port)
        pool = self._pools.get(key)
        if pool is None:
            pool = self._pools[key] = httpx.AsyncHTTPTransport(limits=self.limits, verify=self.tls)
        return await pool.handle_async_request(request)

    async def aclose(self) -> None:
        pools, self._pools = list(self._pools.values()), {}
        for pool in pools:
            await pool.aclose()


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
        backlog: Backlog = no_backlog,
    ) -> None:
        self.limiter: Limiter = limiter or MemoryLimiter()
        # Calls on their way to a portal (the job worker knows): the batcher keeps requests full while many are.
        self.backlog = backlog
        self.refresh_lock: RefreshLock = refresh_lock or LocalRefreshLock()
        self.retry = retry or RetryPolicy()
        self.batching = batching or BatchSettings()
        self.rng = random.Random(seed)
        # The portal's own wall-clock limit for one request is 60 s; reads get a little more. An idle connection is
        # let go before common servers close theirs (uvicorn: 5 s): reusing one the server is closing turns a write
        # into an uncertain one (the request may or may not have been read).
        self.http = httpx.AsyncClient(
            timeout=timeout or httpx.Timeout(connect=5.0, read=65.0, write=15.0, pool=30.0),
            headers={"User-Agent": USER_AGENT, "Accept": "application/json"},
            follow_redirects=False,
            transport=transport or PerHostPools(),
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
        return Portal(sender, self.batching, lambda: self.backlog(key))

    async def aclose(self) -> None:
        await self.http.aclose()

    async def __aenter__(self) -> BitrixClient:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()
