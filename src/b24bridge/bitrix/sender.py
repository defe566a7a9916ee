"""The retrying caller: one logical request through limits, token refresh and backoff until it succeeds or fails.

The auto-batcher and the lister use it through :class:`Sender` alone; it owns no HTTP and no limiter state of its
own: the :class:`~.transport.Transport` sends, the :class:`~.gate.Gate` paces, the :class:`~.refresh.TokenKeeper`
refreshes.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Mapping, Sequence
from typing import Any

import structlog

from b24bridge.observability import portal_label

from . import errors, metrics
from .answers import Answer, CommandResult, decode_batch
from .errors import BitrixError
from .gate import Gate
from .policy import RetryPolicy
from .refresh import TokenKeeper
from .transport import Transport

log = structlog.get_logger("b24bridge.bitrix")

Params = Mapping[str, Any] | None
# How many refreshes one request may ask for before its expired token is reported instead.
_MAX_REFRESHES = 3


class Sender:
    def __init__(
        self, transport: Transport, gate: Gate, tokens: TokenKeeper, retry: RetryPolicy, rng: random.Random
    ) -> None:
        self.transport = transport
        self.gate = gate
        self.tokens = tokens
        self.retry = retry
        self.rng = rng

    @property
    def key(self) -> str:
        return self.gate.key

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

        ``sub_methods`` are the commands of a batch (each counts against its own method's budget). ``reserved``
        means the caller (the auto-batcher) already did the first attempt's bookkeeping: it holds a request slot,
        checked the operating-time budgets and counted the calls as in flight.
        """
        calls = list(sub_methods) or [method]
        budgets = list(dict.fromkeys(calls))
        began = time.monotonic()
        attempt = refreshes = 0
        counted = reserved
        while True:
            token: str | None = None
            try:
                if not counted:
                    await self.gate.admit(budgets)
                    self.gate.started(calls)
                counted = False
                self.tokens.raise_if_lost()
                token = self.tokens.access_token
                answer = await self.transport.send(
                    method, params, token=token, idempotent=idempotent, commands=len(calls)
                )
            except errors.ExpiredTokenError:
                refreshes += 1
                if refreshes > _MAX_REFRESHES or token is None:
                    raise
                await self.tokens.refresh(token)
                continue
            except errors.AuthLostError:
                raise
            except BitrixError as exc:
                attempt += 1
                await self.gate.refused(exc, budgets)
                if not exc.retryable or attempt >= self.retry.max_attempts:
                    raise
                if time.monotonic() - began >= self.retry.max_elapsed:
                    raise
                delay = self.retry.delay(attempt, self.rng)
                metrics.RETRIES.labels(portal_label(self.key), exc.code or type(exc).__name__).inc()
                log.warning(
                    "bitrix.retry", portal=self.key, method=method, attempt=attempt, error=str(exc), delay=delay
                )
                await asyncio.sleep(delay)
                continue
            finally:
                if not counted:  # this attempt's calls are no longer in flight
                    self.gate.finished(calls)
            await self.gate.note_operating(method, answer.time)
            return answer

    async def batch_results(self, answer: Answer, methods: Mapping[str, str]) -> dict[str, CommandResult]:
        """A batch answer split per command, each command's operating time reported to the limiter."""
        results = decode_batch(answer, methods, portal=self.key)
        await self.gate.note_batch(results, methods)
        return results
