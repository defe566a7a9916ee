"""The portal's two limits (REFERENCE section 2): a leaky bucket of requests and an operating-time budget."""

from __future__ import annotations

import math
from dataclasses import dataclass, field


@dataclass
class LeakyBucket:
    """Requests fill the bucket by one; it drains ``drain`` per second; past ``burst`` a request is refused.

    A refused request does not fill the bucket: it never reached the method.
    """

    burst: int
    drain: float
    level: float = 0.0
    updated: float = 0.0

    def admit(self, now: float) -> bool:
        self.level = max(0.0, self.level - (now - self.updated) * self.drain)
        self.updated = now
        if self.level + 1.0 > self.burst:
            return False
        self.level += 1.0
        return True


@dataclass
class _Basket:
    opened: float
    seconds: float


@dataclass
class OperatingBudget:
    """Server time per method per app/webhook, summed over ten one-minute baskets that live ``window`` seconds.

    The check happens before a call; the call that crosses the limit is allowed to finish.
    """

    limit: float
    window: float = 600.0
    baskets: list[_Basket] = field(default_factory=list)

    def _expire(self, now: float) -> None:
        while self.baskets and self.baskets[0].opened + self.window <= now:
            self.baskets.pop(0)

    def blocked(self, now: float) -> bool:
        self._expire(now)
        return self.used() > self.limit

    def spend(self, now: float, seconds: float) -> None:
        self._expire(now)
        basket_span = self.window / 10
        if self.baskets and now - self.baskets[-1].opened < basket_span:
            self.baskets[-1].seconds += seconds
        else:
            self.baskets.append(_Basket(now, seconds))

    def used(self) -> float:
        return sum(b.seconds for b in self.baskets)

    def reset_at(self) -> int | None:
        return math.ceil(self.baskets[0].opened + self.window) if self.baskets else None


@dataclass
class Limiter:
    """All limit state of one sandbox portal."""

    burst: int
    drain: float
    operating_limit: float
    operating_window: float = 600.0
    enabled: bool = True
    buckets: dict[str, LeakyBucket] = field(default_factory=dict)
    budgets: dict[tuple[str, str], OperatingBudget] = field(default_factory=dict)
    # How often each limit refused: what a client that claims to respect the limits is measured by.
    refused_requests: int = 0
    refused_operating: int = 0
    admitted_requests: int = 0

    def admit_request(self, client_ip: str, now: float) -> bool:
        if not self.enabled:
            return True
        bucket = self.buckets.get(client_ip)
        if bucket is None:
            bucket = self.buckets[client_ip] = LeakyBucket(self.burst, self.drain, updated=now)
        admitted = bucket.admit(now)
        if admitted:
            self.admitted_requests += 1
        else:
            self.refused_requests += 1
        return admitted

    def budget(self, caller_key: str, method: str) -> OperatingBudget:
        key = (caller_key, method)
        budget = self.budgets.get(key)
        if budget is None:
            budget = self.budgets[key] = OperatingBudget(self.operating_limit, self.operating_window)
        return budget

    def reset(self) -> None:
        self.buckets.clear()
        self.budgets.clear()
        self.refused_requests = self.refused_operating = self.admitted_requests = 0
