"""One portal's share of the limiter: what a request asks before it goes and reports after it comes back."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from b24bridge.observability import portal_label

from . import errors, metrics
from .answers import CommandResult
from .limiter import Limiter, Limits, wait_for_slot


class Gate:
    """The limiter seen from one portal (``key``, ``limits``), so callers never pass the three around together."""

    def __init__(self, limiter: Limiter, key: str, limits: Limits) -> None:
        self.limiter = limiter
        self.key = key
        self.limits = limits

    async def admit(self, methods: Sequence[str]) -> None:
        """Wait for every method's operating-time budget, then for a request slot."""
        waited = 0.0
        for name in methods:
            delay = await self.limiter.method_delay(self.key, name, self.limits)
            if delay > 0:
                waited += delay
                await asyncio.sleep(delay)
        waited += await wait_for_slot(self.limiter, self.key, self.limits)
        metrics.LIMITER_WAIT.labels(portal_label(self.key)).observe(waited)

    async def take_slot(self) -> None:
        """Wait for the next request slot only (the caller checked the methods' budgets itself)."""
        waited = await wait_for_slot(self.limiter, self.key, self.limits)
        metrics.LIMITER_WAIT.labels(portal_label(self.key)).observe(waited)

    async def fullness(self) -> float:
        return await self.limiter.fullness(self.key, self.limits)

    async def method_delay(self, method: str) -> float:
        return await self.limiter.method_delay(self.key, method, self.limits)

    async def allowance(self, method: str) -> int | None:
        return await self.limiter.method_allowance(self.key, method, self.limits)

    def started(self, methods: Iterable[str]) -> None:
        for name in methods:
            self.limiter.started(self.key, name)

    def finished(self, methods: Iterable[str]) -> None:
        for name in methods:
            self.limiter.finished(self.key, name)

    async def refused(self, exc: errors.BitrixError, methods: Iterable[str]) -> None:
        """What a refusal teaches: the bucket is fuller than we thought, or a method's budget is spent."""
        if isinstance(exc, errors.QueryLimitError):
            await self.limiter.request_refused(self.key, self.limits)
        elif isinstance(exc, errors.OperationTimeLimitError):
            for name in methods:
                await self.limiter.method_blocked(self.key, name)

    async def note_operating(self, method: str, timing: Mapping[str, Any], previous: float | None = None) -> None:
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
        finish = timing.get("finish")
        await self.limiter.record_operating(
            self.key,
            method,
            float(operating),
            float(reset_at) if reset_at is not None else None,
            cost,
            float(finish) if finish is not None else None,
            cost_is_step=previous is not None,
        )
        metrics.OPERATING.labels(portal_label(self.key), method).set(float(operating))

    async def note_batch(self, results: Mapping[str, CommandResult], methods: Mapping[str, str]) -> None:
        """Operating times of a batch's commands, each costed against the one before it of the same method."""
        last: dict[str, float] = {}
        for key, method in methods.items():
            timing = results[key].time
            if timing.get("operating") is None:
                continue
            await self.note_operating(method, timing, last.get(method))
            last[method] = float(timing["operating"])
