"""A connection to one portal: requests with limits, retries and token refresh; explicit and automatic batches."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import httpx
import structlog

from . import errors, metrics
from .auth import Auth, OAuthAuth, TokenLoader, TokenPair, TokenSaver
from .batching import AutoBatcher
from .client import NOT_BATCHABLE, is_idempotent
from .encoding import batch_command
from .errors import BitrixError, Retry
from .limiter import Limits, wait_for_slot
from .listing import export_rows, iterate_pages
from .refresh import refresh_tokens

if TYPE_CHECKING:
    from .client import BitrixClient

log = structlog.get_logger("b24bridge.bitrix")

MAX_BATCH = 50
Params = Mapping[str, Any] | None


@dataclass
class Answer:
    """A successful answer: ``result`` plus the list and timing envelope."""

    result: Any
    total: int | None = None
    next: int | None = None
    time: dict[str, Any] = field(default_factory=dict)


@dataclass
class CommandResult:
    """One command of a batch: its value or its error (and list envelope, if any)."""

    value: Any = None
    error: errors.APIError | None = None
    total: int | None = None
    next: int | None = None
    time: dict[str, Any] = field(default_factory=dict)

    def unwrap(self) -> Any:
        if self.error is not None:
            raise self.error
        return self.value


class Portal:
    def __init__(
        self,
        client: BitrixClient,
        auth: Auth,
        *,
        key: str,
        limits: Limits,
        on_tokens: TokenSaver | None,
        load_tokens: TokenLoader | None,
        on_domain_change: Callable[[str], Awaitable[None]] | None,
    ) -> None:
        self.client = client
        self.auth = auth
        self.key = key
        self.limits = limits
        self._on_tokens = on_tokens
        self._load_tokens = load_tokens
        self._on_domain_change = on_domain_change
        self._refresh_mutex = asyncio.Lock()
        self.auth_lost: errors.AuthLostError | None = None
        self._batcher: AutoBatcher | None = None

    # --- public API ----------------------------------------------------------------------------------------

    async def call(self, method: str, params: Params = None, *, idempotent: bool | None = None) -> Any:
        """Call ``method`` and return its ``result``; concurrent calls share batch requests when enabled."""
        method = method.lower()
        safe = is_idempotent(method) if idempotent is None else idempotent
        try:
            if self.client.batching.enabled and method not in NOT_BATCHABLE:
                if self._batcher is None:
                    self._batcher = AutoBatcher(self, self.client.batching)
                result = await self._batcher.submit(method, params, safe)
            else:
                result = (await self.execute(method, params, idempotent=safe)).result
        except BitrixError as exc:
            metrics.CALLS.labels(self.key, method, exc.retry.value).inc()
            raise
        metrics.CALLS.labels(self.key, method, "ok").inc()
        return result

    async def request(self, method: str, params: Params = None, *, idempotent: bool | None = None) -> Answer:
        """One method in one HTTP request of its own (no auto-batching), with limits and retries."""
        method = method.lower()
        safe = is_idempotent(method) if idempotent is None else idempotent
        return await self.execute(method, params, idempotent=safe)

    async def batch(
        self, commands: Mapping[str, tuple[str, Params]] | Sequence[tuple[str, Params]], *, halt: bool = False
    ) -> dict[str, CommandResult]:
        """Run up to 50 commands in one request; later ones may use ``$result[key][FIELD]`` of earlier ones."""
        named = dict(commands) if isinstance(commands, Mapping) else {str(i): c for i, c in enumerate(commands)}
        if len(named) > MAX_BATCH:
            raise ValueError(f"a batch holds at most {MAX_BATCH} commands, got {len(named)}")
        methods = [m.lower() for m, _ in named.values()]
        cmd = {key: batch_command(m.lower(), p) for key, (m, p) in named.items()}
        answer = await self.execute(
            "batch",
            {"halt": 1 if halt else 0, "cmd": cmd},
            idempotent=all(is_idempotent(m) for m in methods),
            sub_methods=methods,
        )
        return await self.split_batch(answer, {k: m.lower() for k, (m, _) in named.items()})

    def list(self, method: str, params: Params = None) -> AsyncIterator[Any]:
        """Every row of a list method, page by page (remaining pages fetched 50 at a time in batches)."""
        return iterate_pages(self, method.lower(), dict(params or {}))

    def export(self, method: str, params: Params = None, *, id_field: str = "ID") -> AsyncIterator[Any]:
        """Fast export of large sets: ``start=-1`` with a moving ``>ID`` filter, pages chained inside batches."""
        return export_rows(self, method.lower(), dict(params or {}), id_field)

    # --- the request pipeline ------------------------------------------------------------------------------

    async def execute(
        self,
        method: str,
        params: Params,
        *,
        idempotent: bool,
        sub_methods: Sequence[str] = (),
        reserved: bool = False,
    ) -> Answer:
        """Send one HTTP request for ``method`` until it succeeds or fails for good.

        ``reserved`` means the caller (the auto-batcher) already did the first attempt's bookkeeping: it holds a
        request slot from the limiter, checked the operating-time budgets and counted the calls as in flight.
        """
        limiter, policy = self.client.limiter, self.client.retry
        calls = list(sub_methods) or [method]
        budget_methods = list(dict.fromkeys(calls))
        began = time.monotonic()
        attempt = refreshes = 0
        counted = reserved
        while True:
            try:
                if not counted:
                    await self._admit(budget_methods)
                    for name in calls:
                        limiter.started(self.key, name)
                counted = False
                if self.auth_lost is not None:
                    raise self.auth_lost
                token = self.auth.tokens.access_token if isinstance(self.auth, OAuthAuth) else None
                body = dict(params or {})
                if token is not None:
                    body["auth"] = token
                answer = await self._post(method, body, idempotent=idempotent, commands=len(calls))
            except errors.ExpiredTokenError:
                refreshes += 1
                if refreshes > 3 or token is None:
                    raise
                await self.refresh(token)
                continue
            except errors.AuthLostError:
                raise
            except BitrixError as exc:
                attempt += 1
                await self._note_refusal(exc, budget_methods)
                elapsed = time.monotonic() - began
                if not exc.retryable or attempt >= policy.max_attempts or elapsed >= policy.max_elapsed:
                    raise
                delay = policy.delay(attempt, self.client.rng)
                metrics.RETRIES.labels(self.key, exc.code or type(exc).__name__).inc()
                log.warning(
                    "bitrix.retry", portal=self.key, method=method, attempt=attempt, error=str(exc), delay=delay
                )
                await asyncio.sleep(delay)
                continue
            finally:
                if not counted:  # this attempt's calls are no longer in flight
                    for name in calls:
                        limiter.finished(self.key, name)
            await self._note_operating(method, answer.time)
            return answer

    async def _admit(self, methods: Sequence[str]) -> None:
        """Wait for every method's operating-time budget, then for a request slot."""
        limiter = self.client.limiter
        waited = 0.0
        for name in methods:
            delay = await limiter.method_delay(self.key, name, self.limits)
            if delay > 0:
                waited += delay
                await asyncio.sleep(delay)
        waited += await wait_for_slot(limiter, self.key, self.limits)
        metrics.LIMITER_WAIT.labels(self.key).observe(waited)

    async def _note_refusal(self, exc: BitrixError, methods: Sequence[str]) -> None:
        if isinstance(exc, errors.QueryLimitError):
            await self.client.limiter.request_refused(self.key, self.limits)
        elif isinstance(exc, errors.OperationTimeLimitError):
            for name in methods:
                await self.client.limiter.method_blocked(self.key, name, exc.reset_at)

    async def _note_operating(self, method: str, timing: Mapping[str, Any], previous: float | None = None) -> None:
        """Report a method's operating time to the limiter.

        One call's cost is the step from ``previous``, the operating time the command before it (same method, same
        batch) reported: commands of a batch run one after another. A lone answer has no such step; there the
        portal's own ``processing`` time (what the budget is fed from) is the estimate.
        """
        operating = timing.get("operating")
        if operating is None:
            return
        reset_at = timing.get("operating_reset_at")
        if previous is not None:
            cost: float | None = float(operating) - previous
        else:
            cost = float(timing["processing"]) if timing.get("processing") is not None else None
        await self.client.limiter.record_operating(
            self.key, method, float(operating), float(reset_at) if reset_at is not None else None, cost
        )
        metrics.OPERATING.labels(self.key, method).set(float(operating))

    async def _post(self, method: str, body: dict[str, Any], *, idempotent: bool, commands: int) -> Answer:
        kind = "batch" if method == "batch" else "call"
        for _hop in range(3):
            url = f"{self.auth.base}{method}"
            started = time.monotonic()
            try:
                response = await self.client.http.post(url, content=json.dumps(body), headers=_JSON)
            except (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout) as exc:
                self._log(method, kind, None, started, commands, error=type(exc).__name__)
                message = f"cannot connect: {type(exc).__name__}"
                raise errors.ConnectError(message, method=method, portal=self.key) from None
            except httpx.HTTPError as exc:
                self._log(method, kind, None, started, commands, error=type(exc).__name__)
                error = errors.UncertainError(
                    f"no answer after the request was sent ({type(exc).__name__}); it may have been executed",
                    method=method,
                    portal=self.key,
                )
                if idempotent:
                    error.retry = Retry.RETRYABLE
                raise error from None
            self._log(method, kind, response.status_code, started, commands)
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
            metrics.ERRORS.labels(self.key, error.code or str(response.status_code)).inc()
            raise error
        return Answer(body.get("result"), body.get("total"), body.get("next"), body.get("time") or {})

    def _log(
        self, method: str, kind: str, status: int | None, started: float, commands: int, error: str | None = None
    ) -> None:
        duration = time.monotonic() - started
        metrics.REQUESTS.labels(self.key, kind, str(status or "none")).inc()
        metrics.BATCH_SIZE.labels(self.key).observe(commands)
        metrics.REQUEST_SECONDS.labels(self.key, kind).observe(duration)
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

    # --- tokens --------------------------------------------------------------------------------------------

    def set_tokens(self, tokens: TokenPair) -> None:
        """New tokens from outside (re-install, re-authorisation): also clears a lost-auth state."""
        if not isinstance(self.auth, OAuthAuth):
            raise errors.ConfigurationError("a webhook connection has no tokens", portal=self.key)
        self.auth.tokens = tokens
        self.auth_lost = None

    async def refresh(self, stale_access_token: str) -> None:
        """Refresh once for everyone who saw ``stale_access_token`` expire (single-flight)."""
        auth = self.auth
        if not isinstance(auth, OAuthAuth):
            raise errors.ConfigurationError("a webhook connection cannot refresh tokens", portal=self.key)
        async with self._refresh_mutex:
            if auth.tokens.access_token != stale_access_token:
                return  # another coroutine already refreshed
            async with self.client.refresh_lock.hold(self.key):
                if self._load_tokens is not None:
                    stored = await self._load_tokens()
                    if stored is not None and stored.access_token != stale_access_token:
                        auth.tokens = stored  # another process refreshed and saved first
                        return
                try:
                    pair = await refresh_tokens(self.client.http, auth, self.key)
                except errors.AuthLostError as exc:
                    self.auth_lost = exc
                    raise
                if self._on_tokens is not None:
                    await self._on_tokens(pair)  # persisted before anyone uses it
                auth.tokens = pair

    # --- batches -------------------------------------------------------------------------------------------

    async def split_batch(self, answer: Answer, methods: Mapping[str, str]) -> dict[str, CommandResult]:

        sections = answer.result if isinstance(answer.result, dict) else {}
        values = _section(sections, "result")
        failures = _section(sections, "result_error")
        totals = _section(sections, "result_total")
        nexts = _section(sections, "result_next")
        times = _section(sections, "result_time")
        results: dict[str, CommandResult] = {}
        last_operating: dict[str, float] = {}
        for key, method in methods.items():
            timing = times.get(key) or {}
            if isinstance(timing, dict) and timing.get("operating") is not None:
                await self._note_operating(method, timing, last_operating.get(method))
                last_operating[method] = float(timing["operating"])
            if key in failures:
                error = errors.command_error(method, failures[key], portal=self.key, idempotent=is_idempotent(method))
                results[key] = CommandResult(error=error, time=timing)
            elif key in values:
                results[key] = CommandResult(values[key], None, totals.get(key), nexts.get(key), timing)
            else:
                results[key] = CommandResult(error=errors.BadRequestError("not executed (batch halted)", method=method))
        return results


_JSON = {"Content-Type": "application/json"}


def _section(sections: Mapping[str, Any], name: str) -> dict[str, Any]:
    value = sections.get(name)
    if isinstance(value, dict):
        return value
    if isinstance(value, list):  # PHP sends a map keyed 0..n-1 as a list
        return {str(i): v for i, v in enumerate(value)}
    return {}
