"""One HTTP request to one portal: where it goes, its redirects, its metrics and log line, its parsed answer.

Everything above this (limits, retries, token refresh, batching) goes through :meth:`Transport.send`.
"""

from __future__ import annotations

import json
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any
from urllib.parse import urlsplit

import httpx
import structlog

from b24bridge.observability import portal_label

from . import errors, metrics
from .answers import Answer
from .auth import Auth
from .errors import Retry

log = structlog.get_logger("b24bridge.bitrix")

_JSON = {"Content-Type": "application/json"}
_MAX_REDIRECTS = 3

DomainChanged = Callable[[str], Awaitable[None]]


class Transport:
    def __init__(self, http: httpx.AsyncClient, auth: Auth, key: str, on_domain_change: DomainChanged | None) -> None:
        self.http = http
        self.auth = auth
        self.key = key
        self._on_domain_change = on_domain_change

    async def send(
        self, method: str, params: Mapping[str, Any] | None, *, token: str | None, idempotent: bool, commands: int
    ) -> Answer:
        """POST ``method`` once (following a portal's move to a new domain); the answer or a typed error."""
        body = dict(params or {})
        if token is not None:
            body["auth"] = token
        content = json.dumps(body)
        kind = "batch" if method == "batch" else "call"
        for _hop in range(_MAX_REDIRECTS):
            started = time.monotonic()
            try:
                response = await self.http.post(f"{self.auth.base}{method}", content=content, headers=_JSON)
            except (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout) as exc:
                self._observe(method, kind, None, started, commands, error=type(exc).__name__)
                message = f"cannot connect: {type(exc).__name__}"
                raise errors.ConnectError(message, method=method, portal=self.key) from None
            except httpx.HTTPError as exc:
                self._observe(method, kind, None, started, commands, error=type(exc).__name__)
                error = errors.UncertainError(
                    f"no answer after the request was sent ({type(exc).__name__}); it may have been executed",
                    method=method,
                    portal=self.key,
                )
                if idempotent:
                    error.retry = Retry.RETRYABLE
                raise error from None
            self._observe(method, kind, response.status_code, started, commands)
            if response.status_code in (301, 302, 307, 308) and "location" in response.headers:
                await self._moved(response.headers["location"])
                continue
            return self._parse(method, response, idempotent)
        raise errors.BitrixError("too many redirects", method=method, portal=self.key)

    def _parse(self, method: str, response: httpx.Response, idempotent: bool) -> Answer:
        raw = response.text
        try:
            body = response.json()
        except ValueError:
            body = None
        if response.status_code >= 400 or not isinstance(body, dict) or "error" in body:
            error = errors.from_answer(
                response.status_code, body, raw, method=method, portal=self.key, idempotent=idempotent
            )
            metrics.ERRORS.labels(portal_label(self.key), error.code or str(response.status_code)).inc()
            raise error
        return Answer(body.get("result"), body.get("total"), body.get("next"), body.get("time") or {})

    def _observe(
        self, method: str, kind: str, status: int | None, started: float, commands: int, error: str | None = None
    ) -> None:
        duration = time.monotonic() - started
        metrics.REQUESTS.labels(portal_label(self.key), kind, str(status or "none")).inc()
        metrics.BATCH_SIZE.labels(portal_label(self.key)).observe(commands)
        metrics.REQUEST_SECONDS.labels(portal_label(self.key), kind).observe(duration)
        log.info(
            "bitrix.request",
            portal=self.key,
            method=method,
            commands=commands,
            status=status,
            duration_ms=round(duration * 1000, 1),
            error=error,
        )

    async def _moved(self, location: str) -> None:
        """A renamed portal answers 302 to its new domain; follow it for good, and re-POST."""
        netloc = urlsplit(location).netloc
        if not netloc or netloc == self.auth.domain:
            raise errors.BitrixError("redirect without a new domain", portal=self.key)
        log.warning("bitrix.portal_moved", portal=self.key, old=self.auth.domain, new=netloc)
        self.auth.moved(netloc)
        if self._on_domain_change is not None:
            await self._on_domain_change(netloc)
