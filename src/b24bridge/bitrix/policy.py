"""What the client does by default: how it retries, how it batches, which methods are safe to send twice."""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass

# The portal runs at most this many commands in one ``batch`` request (REFERENCE 3).
MAX_BATCH = 50
# Methods that cannot travel inside a batch (a nested batch is refused with ERROR_BATCH_METHOD_NOT_ALLOWED).
NOT_BATCHABLE = frozenset({"batch"})

# How many calls are on their way to a portal (by its key) and not yet made: the jobs running or queued for it, say.
# Told by whoever knows (the job worker); a portal with many coming keeps its requests full (AutoBatcher._gather).
Backlog = Callable[[str], int]


def no_backlog(key: str) -> int:
    return 0


# Method names whose repetition changes nothing: safe to send again after an uncertain failure.
_IDEMPOTENT_VERBS = {"get", "list", "fields", "current", "info", "search", "findbycomm", "update", "set"}
_IDEMPOTENT_METHODS = {"profile", "scope", "methods", "events", "bizproc.event.send"}


def is_idempotent(method: str) -> bool:
    method = method.lower()
    return method in _IDEMPOTENT_METHODS or method.rsplit(".", 1)[-1] in _IDEMPOTENT_VERBS


@dataclass(frozen=True)
class RetryPolicy:
    """Exponential backoff with full jitter, capped in attempts and in total time.

    Short on purpose: it rides out a blip (a refused connection, a gateway 503) within a few seconds. A portal
    that stays unreachable is the caller's to retry on its own schedule (a run's retry schedule), not this one's.
    """

    max_attempts: int = 4
    base_delay: float = 0.5
    max_delay: float = 5.0
    max_elapsed: float = 20.0

    def delay(self, attempt: int, rng: random.Random) -> float:
        return rng.uniform(0.0, min(self.max_delay, self.base_delay * (2 ** (attempt - 1))))


@dataclass(frozen=True)
class BatchSettings:
    """Auto-batching: concurrent calls to one portal share ``batch`` requests of up to 50 commands."""

    enabled: bool = True
    window: float = 0.005  # how long a lone call waits for company before it is sent
    wave_limit: float = 0.05  # the longest a request waits for calls that keep arriving (see AutoBatcher._gather)
    max_in_flight: int = 4  # concurrent HTTP requests per portal
    # Share of the portal's burst kept for full batches (see AutoBatcher._gather).
    burst_reserve: float = 0.5
    # The longest a partial request waits to fill while its portal has calls coming (see AutoBatcher._gather), in the
    # portal's drain intervals.
    backlog_hold: float = 2.0
    # Calls coming (BitrixClient's ``backlog``) from which a portal's requests wait to fill: above what a portal at a
    # few calls a second has running (one or two), and below what a flood's first count shows (its first jobs, 8 to
    # 23 in bench/tenants.py --bridge: at 25, its first requests went a few commands each).
    backlog_threshold: int = 5
