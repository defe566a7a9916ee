"""Calls that come together share one statement: while a group is under way, the calls made meanwhile gather and go
together in the next; a lone call waits for nobody.

Why: a run's statements come in waves. A batch's answer wakes the runs whose commands it carried (25 of a flood's
at once), and each then makes the same statement: its links read, its end, its job's end. One statement each cost
the event loop a connection checkout and psycopg's work per statement, about 3 % of a flooded loop per statement
(py-spy, docs/benchmarks.md); one statement for the wave costs that once.

A group whose statement fails is tried again one call at a time (all at once, as they would have gone without
this), so each caller gets its own answer or its own error: one run's value the database refuses never fails the
runs beside it, and an outage fails each on its own. With ``split=False`` the group's failure is each caller's
(the door's group commit: its callers spool, and trying a group's calls again one by one would only keep the
portal waiting longer). With ``timeout``, a group not done by then fails its callers with ``TimeoutError`` while
its statement goes on (the door answers the portal in time; a commit that lands late is a duplicate by its key).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Hashable
from typing import Generic, TypeVar

A = TypeVar("A")
R = TypeVar("R")

MAX_GROUP = 100
# Groups under way at once: with one, a call that just missed a group waits for it and then for its own.
FLUSHERS = 2


def _settle(future: asyncio.Future[R], answer: R | Exception) -> None:
    if future.done():  # its caller was cancelled
        return
    if isinstance(answer, Exception):
        future.set_exception(answer)
    else:
        future.set_result(answer)


def _expire(group: list[tuple[A, asyncio.Future[R]]]) -> None:
    for _, future in group:
        _settle(future, TimeoutError("the group was not done in time"))


def _retrieve(future: asyncio.Future[R]) -> None:
    if not future.cancelled():
        future.exception()  # a caller that was cancelled never reads a late failure: read here


class Coalescer(Generic[A, R]):
    """``await coalescer(arg)``: ``together(args)`` for the calls gathered, its answers in their order.

    With ``distinct``, a group holds one call per key (one run's end, say), and a call whose key is in a group
    under way waits for that group to be done: it goes after the first, as it would have without this (a dedupe
    claim made twice hears of the first; a run's second end never lands before its first).
    """

    def __init__(
        self,
        together: Callable[[list[A]], Awaitable[list[R]]],
        *,
        distinct: Callable[[A], Hashable] | None = None,
        max_group: int = MAX_GROUP,
        flushers: int = FLUSHERS,
        split: bool = True,
        timeout: float | None = None,
    ) -> None:
        self.together = together
        self.distinct = distinct
        self.max_group = max_group
        self.flushers = flushers
        self.split = split
        self.timeout = timeout
        self._pending: list[tuple[A, asyncio.Future[R]]] = []
        self._flushing = 0
        self._under_way: set[Hashable] = set()  # the keys of the groups under way (with ``distinct``)
        self._tasks: set[asyncio.Task[None]] = set()

    async def __call__(self, arg: A) -> R:
        return await self.submit(arg)

    def submit(self, arg: A) -> asyncio.Future[R]:
        """The future of ``arg``'s answer, for a caller that waits with a deadline of its own."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[R] = loop.create_future()
        future.add_done_callback(_retrieve)
        self._pending.append((arg, future))
        if self._flushing < self.flushers:
            self._flushing += 1
            task = loop.create_task(self._flush())
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        return future

    async def aclose(self) -> None:
        """Let the groups under way finish (shutdown)."""
        while self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _flush(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            while self._pending:
                group, keys = self._take()
                if not group:  # every key waiting is in a group under way: its flusher takes them after it
                    break
                self._under_way |= keys
                watchdog = None if self.timeout is None else loop.call_later(self.timeout, _expire, group)
                try:
                    answers = await self.together([arg for arg, _ in group])
                except Exception as exc:
                    if len(group) == 1 or not self.split:
                        for _, future in group:
                            _settle(future, exc)
                    else:
                        await asyncio.gather(*(self._alone(arg, future) for arg, future in group))
                    continue
                except BaseException:  # cancelled (shutdown): nobody is left waiting for ever
                    for _, future in group + self._pending:
                        future.cancel()
                    self._pending = []
                    raise
                finally:
                    self._under_way -= keys
                    if watchdog is not None:
                        watchdog.cancel()
                for (_, future), answer in zip(group, answers, strict=True):
                    _settle(future, answer)
        finally:
            self._flushing -= 1

    def _take(self) -> tuple[list[tuple[A, asyncio.Future[R]]], set[Hashable]]:
        if self.distinct is None:
            group, self._pending = self._pending[: self.max_group], self._pending[self.max_group :]
            return group, set()
        group, later, keys = [], [], set()
        for waiting in self._pending:
            key = self.distinct(waiting[0])
            if key in keys or key in self._under_way or len(group) >= self.max_group:
                later.append(waiting)
            else:
                keys.add(key)
                group.append(waiting)
        self._pending = later
        return group, keys

    async def _alone(self, arg: A, future: asyncio.Future[R]) -> None:
        try:
            (answer,) = await self.together([arg])
        except Exception as exc:
            _settle(future, exc)
            return
        _settle(future, answer)
