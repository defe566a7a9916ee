"""The process-wide Bitrix24 client: one pooled HTTP client, one limiter, many portal connections.

async with BitrixClient() as client:
    portal = client.portal(WebhookAuth("https://example.bitrix24.com/rest/1/abc123/"))
    contact_id = await portal.call("crm.contact.add", {"fields": {"NAME": "Ann"}})
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from types import TracebackType
from typing import TYPE_CHECKING, Any

import httpx

from .auth import Auth, LocalRefreshLock, RefreshLock, TokenLoader, TokenSaver
from .limiter import Limiter, Limits, MemoryLimiter

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from .portal import Portal

USER_AGENT = "b24bridge/0.1 (+https://github.com/b24bridge)"

# Method names whose repetition changes nothing: safe to send again after an uncertain failure.
_IDEMPOTENT_VERBS = {"get", "list", "fields", "current", "info", "search", "findbycomm", "update", "set"}
_IDEMPOTENT_METHODS = {"profile", "scope", "methods", "events", "bizproc.event.send"}
NOT_BATCHABLE = {"batch"}


def is_idempotent(method: str) -> bool:
    method = method.lower()
    return method in _IDEMPOTENT_METHODS or method.rsplit(".", 1)[-1] in _IDEMPOTENT_VERBS


@dataclass(frozen=True)
class RetryPolicy:
    """Exponential backoff with full jitter, capped in attempts and in total time."""

    max_attempts: int = 8
    base_delay: float = 0.5
    max_delay: float = 30.0
    max_elapsed: float = 300.0

    def delay(self, attempt: int, rng: random.Random) -> float:
        return rng.uniform(0.0, min(self.max_delay, self.base_delay * (2 ** (attempt - 1))))


@dataclass(frozen=True)
class BatchSettings:
    """Auto-batching: concurrent calls to one portal share ``batch`` requests of up to 50 commands."""

    enabled: bool = True
    window: float = 0.005  # how long a lone call waits for company before it is sent
    max_in_flight: int = 4  # concurrent HTTP requests per portal
    # Share of the portal's burst kept for full batches (see AutoBatcher._gather).
    burst_reserve: float = 0.5


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
        # The portal's own wall-clock limit for one request is 60 s; reads get a little more.
        self.http = httpx.AsyncClient(
            timeout=timeout or httpx.Timeout(connect=5.0, read=65.0, write=15.0, pool=30.0),
            limits=httpx.Limits(max_connections=200, max_keepalive_connections=50, keepalive_expiry=30.0),
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
        on_domain_change: Callable[[str], Awaitable[None]] | None = None,
    ) -> Portal:
        """A connection to one portal. ``key`` names it for limits and locks (member_id; domain by default)."""
        from .portal import Portal

        return Portal(
            self,
            auth,
            key=key or auth.domain,
            limits=limits or Limits(),
            on_tokens=on_tokens,
            load_tokens=load_tokens,
            on_domain_change=on_domain_change,
        )

    async def aclose(self) -> None:
        await self.http.aclose()

    async def __aenter__(self) -> BitrixClient:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()


def unwrap_items(result: Any) -> list[Any]:
    """A list method's rows: a plain list, or ``{"items": [...]}`` (crm.item.list) and similar one-key maps."""
    if isinstance(result, list):
        return result
    if isinstance(result, dict):
        lists = [v for v in result.values() if isinstance(v, list)]
        if len(lists) == 1:
            return lists[0]
    return []
