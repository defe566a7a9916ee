"""Staying inside a portal's limits instead of bouncing off them (REFERENCE section 2).

Two limits apply per portal: a leaky bucket of HTTP requests (burst, then ``drain`` per second) and an
operating-time budget per method (server seconds summed over ten minutes). The client asks the limiter before
every HTTP request and reports what the portal said afterwards. State lives in process (``MemoryLimiter``) or in
Redis (``RedisLimiter``) so that every process and machine talking to one portal shares one budget.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Protocol


@dataclass(frozen=True)
class Limits:
    """A portal's plan limits and the headroom we keep below them."""

    burst: int = 50
    drain: float = 2.0
    operating_limit: float = 480.0
    # Requests kept in reserve below the portal's burst: other clients on our IP share the bucket, and
    # clocks and networks are not exact.
    bucket_margin: int = 2

    @classmethod
    def enterprise(cls) -> Limits:
        return cls(burst=250, drain=5.0)

    @property
    def capacity(self) -> float:
        return max(1.0, float(self.burst - self.bucket_margin))


class Limiter(Protocol):
    async def reserve_request(self, portal: str, limits: Limits) -> float:
        """Take one request slot; return how many seconds to wait before sending it."""
        ...

    async def request_refused(self, portal: str, limits: Limits) -> None:
        """The portal answered QUERY_LIMIT_EXCEEDED: its bucket is fuller than we thought."""
        ...

    async def fullness(self, portal: str, limits: Limits) -> float:
        """How much of the burst is used now, 0 (all free) to 1 (full): how precious the next request is."""
        ...

    async def method_delay(self, portal: str, method: str, limits: Limits) -> float:
        """Seconds until ``method`` may be called again within its operating-time budget (0: now)."""
        ...

    async def method_allowance(self, portal: str, method: str, limits: Limits) -> int | None:
        """How many calls of ``method`` fit in its budget now (None: no limit known)."""
        ...

    async def record_operating(
        self,
        portal: str,
        method: str,
        operating: float,
        reset_at: float | None,
        cost: float | None = None,
        at: float | None = None,
        cost_is_step: bool = True,
    ) -> None:
        """What the portal reported in ``time.operating`` / ``operating_reset_at`` for ``method`` at its time
        ``at`` (``time.finish``), and what one call of it cost when that is known (see ``Gate.note_operating``):
        measured as the step between two commands of a batch, or (``cost_is_step=False``) a lone call's own
        ``processing`` time, which only seeds the estimate."""
        ...

    async def method_blocked(self, portal: str, method: str) -> None:
        """The portal answered OPERATION_TIME_LIMIT for ``method``: blocked until its budget resets."""
        ...

    def started(self, portal: str, method: str) -> None:
        """A call of ``method`` is in flight (its cost is not yet reported)."""
        ...

    def finished(self, portal: str, method: str) -> None: ...


def bucket_reserve(level: float, updated: float, now: float, limits: Limits) -> tuple[float, float]:
    """Leaky-bucket reservation: (new level, seconds to wait). Waiting requests queue up behind each other."""
    level = max(0.0, level - (now - updated) * limits.drain)
    wait = max(0.0, (level + 1.0 - limits.capacity) / limits.drain)
    return level + 1.0, wait


@dataclass
class _Bucket:
    level: float = 0.0
    updated: float = 0.0


@dataclass
class _Operating:
    """What we know of one method's operating-time budget on one portal."""

    used: float = 0.0
    reset_at: float | None = None
    blocked_until: float = 0.0
    in_flight: int = 0
    avg_cost: float = 0.0
    # Until one call of the method has come back we know nothing of its cost: that call goes alone.
    probed: bool = False
    # The portal's time of the report ``used`` comes from: answers of concurrent requests arrive in any order,
    # and an older report would make the budget look emptier than it is.
    seen: float = 0.0

    def _projected(self) -> float:
        return self.used + self.in_flight * self.avg_cost

    def _stale(self, now: float, limit: float) -> bool:
        # Over the limit, but the oldest basket has expired since: the new sum is unknown until a call reports it.
        return self.used > limit and self.reset_at is not None and self.reset_at <= now

    def delay(self, now: float, limit: float) -> float:
        if self.blocked_until > now:
            return self.blocked_until - now
        if not self.probed and self.in_flight:
            return 0.05
        if self._stale(now, limit):
            return 0.0 if self.in_flight == 0 else 0.05  # one probe at a time
        if self._projected() > limit and self.reset_at is not None:
            return max(0.0, self.reset_at - now)
        return 0.0

    def allowance(self, now: float, limit: float) -> int | None:
        """How many more calls fit in the budget right now (None: no limit known yet)."""
        if self.delay(now, limit) > 0:
            return 0
        if self._stale(now, limit):
            return 1
        if self.avg_cost <= 0:
            return None
        # The portal checks before each call, so calls may go while the sum stays within the limit.
        return max(1, int((limit - self._projected()) // self.avg_cost))


@dataclass
class MemoryLimiter:
    """Limit state for one process."""

    buckets: dict[str, _Bucket] = field(default_factory=dict)
    methods: dict[tuple[str, str], _Operating] = field(default_factory=dict)

    def now(self) -> float:
        return time.time()

    async def reserve_request(self, portal: str, limits: Limits) -> float:
        bucket = self.buckets.setdefault(portal, _Bucket(updated=self.now()))
        now = self.now()
        bucket.level, wait = bucket_reserve(bucket.level, bucket.updated, now, limits)
        bucket.updated = now
        return wait

    async def fullness(self, portal: str, limits: Limits) -> float:
        bucket = self.buckets.get(portal)
        if bucket is None:
            return 0.0
        level = bucket.level - (self.now() - bucket.updated) * limits.drain
        return min(1.0, max(0.0, level / limits.capacity))

    async def request_refused(self, portal: str, limits: Limits) -> None:
        bucket = self.buckets.setdefault(portal, _Bucket())
        bucket.level = max(bucket.level, float(limits.burst))
        bucket.updated = self.now()

    def state_of(self, portal: str, method: str) -> _Operating:
        return self.methods.setdefault((portal, method), _Operating())

    async def method_delay(self, portal: str, method: str, limits: Limits) -> float:
        return self.state_of(portal, method).delay(self.now(), limits.operating_limit)

    async def method_allowance(self, portal: str, method: str, limits: Limits) -> int | None:
        return self.state_of(portal, method).allowance(self.now(), limits.operating_limit)

    async def record_operating(
        self,
        portal: str,
        method: str,
        operating: float,
        reset_at: float | None,
        cost: float | None = None,
        at: float | None = None,
        cost_is_step: bool = True,
    ) -> None:
        op = self.state_of(portal, method)
        # The cost is measured by the caller, never derived from two reports here: other processes' calls land
        # between our reports and would count as ours. A lone call's ``processing`` time seeds the estimate only:
        # a portal may charge more than it reports there (the sandbox's simulated costs do), while the step
        # between two commands of one batch is exactly what the budget grew by.
        if cost is not None and cost > 0 and (cost_is_step or op.avg_cost == 0):
            op.avg_cost = cost if op.avg_cost == 0 else 0.8 * op.avg_cost + 0.2 * cost
        if at is not None:
            if at < op.seen:
                return  # a newer report is already known
            op.seen = at
        op.used = operating
        op.reset_at = reset_at

    async def method_blocked(self, portal: str, method: str) -> None:
        # A 429 carries no time block; the reset time reported by earlier answers says how long, else a basket.
        op = self.state_of(portal, method)
        now = self.now()
        op.blocked_until = op.reset_at if op.reset_at is not None and op.reset_at > now else now + 60.0

    def started(self, portal: str, method: str) -> None:
        self.state_of(portal, method).in_flight += 1

    def finished(self, portal: str, method: str) -> None:
        op = self.state_of(portal, method)
        op.in_flight = max(0, op.in_flight - 1)
        op.probed = True


async def wait_for_slot(limiter: Limiter, portal: str, limits: Limits) -> float:
    """Reserve a request slot and sleep until it is ours; returns the seconds waited."""
    wait = await limiter.reserve_request(portal, limits)
    if wait > 0:
        await asyncio.sleep(wait)
    return wait
