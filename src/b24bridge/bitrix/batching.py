"""Auto-batching: concurrent ``call()``s to one portal travel together in ``batch`` requests.

The portal counts a batch of 50 commands as one request, so packing independent calls is what lifts a client
from 2 calls per second to 100 under cloud limits. A batch goes out when 50 calls are waiting, when the limiter
grants the next request slot (calls keep gathering while it waits), or after a short window for a lone call.
Each caller gets its own result or its own error.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from . import metrics
from .answers import Answer, CommandResult
from .encoding import batch_command
from .errors import BitrixError
from .gate import Gate
from .policy import MAX_BATCH, BatchSettings, RetryPolicy

Params = Mapping[str, Any] | None


class Channel(Protocol):
    """What the batcher needs of a portal connection: its limits, and a way to send a request and read a batch."""

    @property
    def gate(self) -> Gate: ...

    @property
    def retry(self) -> RetryPolicy: ...

    async def execute(
        self,
        method: str,
        params: Params,
        *,
        idempotent: bool,
        sub_methods: Sequence[str] = (),
        reserved: bool = False,
    ) -> Answer: ...

    async def batch_results(self, answer: Answer, methods: Mapping[str, str]) -> dict[str, CommandResult]: ...


@dataclass
class _Pending:
    method: str
    params: Params
    idempotent: bool
    future: asyncio.Future[Any]
    attempts: int = 0


class AutoBatcher:
    def __init__(self, channel: Channel, settings: BatchSettings) -> None:
        self.channel = channel
        self.gate = channel.gate
        self.settings = settings
        self._queue: deque[_Pending] = deque()
        self._arrived = asyncio.Event()
        self._slots = asyncio.Semaphore(settings.max_in_flight)
        self._runner: asyncio.Task[None] | None = None
        self._sending: set[asyncio.Task[None]] = set()

    async def submit(self, method: str, params: Params, idempotent: bool) -> Any:
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._queue.append(_Pending(method, params, idempotent, future))
        self._arrived.set()
        if self._runner is None or self._runner.done():
            self._runner = asyncio.get_running_loop().create_task(self._run())
        return await future

    async def _run(self) -> None:
        try:
            while self._queue:
                await self._gather()
                await self._slots.acquire()
                try:
                    ready = await self._wait_until_sendable()
                    if not ready:
                        self._slots.release()
                        continue
                    await self.gate.take_slot()
                    items = await self._take()
                except BaseException:
                    self._slots.release()
                    raise
                if not items:
                    self._slots.release()
                    continue
                task = asyncio.get_running_loop().create_task(self._send(items))
                self._sending.add(task)
                task.add_done_callback(self._sending.discard)
        except BaseException as exc:  # never leave a caller waiting forever
            for item in self._queue:
                if not item.future.done():
                    item.future.set_exception(exc)
            self._queue.clear()
            raise

    async def _gather(self) -> None:
        """Give a lone call a moment of company; a full batch goes at once.

        How long a partial batch gathers depends on how much of the portal's burst is used: with the bucket empty
        a call goes almost at once (latency); the fuller it gets, the longer it waits, up to one drain interval
        once ``1 - burst_reserve`` of the burst is used, so a spike is not spent on half-empty requests. It never
        waits longer than that: at steady state a request slot frees up every drain interval anyway.
        """
        if len(self._queue) >= MAX_BATCH or self.settings.window <= 0:
            return
        fullness = await self.gate.fullness()
        share = min(1.0, fullness / max(1e-9, 1.0 - self.settings.burst_reserve))
        window = self.settings.window + share / self.gate.limits.drain
        self._arrived.clear()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + window
        while len(self._queue) < MAX_BATCH:
            remaining = deadline - loop.time()
            if remaining <= 0:
                return
            try:
                await asyncio.wait_for(self._arrived.wait(), remaining)
            except TimeoutError:
                return
            self._arrived.clear()

    async def _wait_until_sendable(self) -> bool:
        """Hold back while every waiting method is out of operating-time budget."""
        delays = [await self.gate.method_delay(m) for m in {i.method for i in self._queue}]
        if delays and min(delays) > 0:
            await asyncio.sleep(min(delays))
            return False
        return bool(self._queue)

    async def _take(self) -> list[_Pending]:
        """Up to 50 waiting calls, no more of one method than its operating-time budget still holds."""
        allowance: dict[str, int | None] = {}
        items: list[_Pending] = []
        held: list[_Pending] = []
        while self._queue and len(items) < MAX_BATCH:
            item = self._queue.popleft()
            if item.future.done():  # the caller was cancelled
                continue
            if item.method not in allowance:
                allowance[item.method] = await self.gate.allowance(item.method)
            left = allowance[item.method]
            if left is not None:
                if left <= 0:
                    held.append(item)
                    continue
                allowance[item.method] = left - 1
            items.append(item)
            # Counted now, not when the request starts, so the next batch already sees these calls in flight.
            self.gate.started([item.method])
        self._queue.extendleft(reversed(held))
        return items

    async def _send(self, items: list[_Pending]) -> None:
        try:
            if len(items) == 1:
                await self._send_one(items[0])
            else:
                await self._send_batch(items)
        finally:
            self._slots.release()

    async def _send_one(self, item: _Pending) -> None:
        try:
            answer = await self.channel.execute(item.method, item.params, idempotent=item.idempotent, reserved=True)
        except BitrixError as exc:
            _fail(item, exc)
        except Exception as exc:
            _fail(item, exc)
        else:
            _succeed(item, answer.result)

    async def _send_batch(self, items: list[_Pending]) -> None:
        keys = {f"c{i}": item for i, item in enumerate(items)}
        cmd = {key: batch_command(item.method, item.params) for key, item in keys.items()}
        try:
            answer = await self.channel.execute(
                "batch",
                {"halt": 0, "cmd": cmd},
                idempotent=all(i.idempotent for i in items),
                sub_methods=[i.method for i in items],
                reserved=True,
            )
        except BitrixError as exc:
            # The whole request failed for good. Retries already happened inside execute(); an uncertain
            # failure still lets the idempotent commands go again, while writes are reported as uncertain.
            for item in items:
                if exc.uncertain and item.idempotent:
                    self._requeue(item, exc)
                else:
                    _fail(item, _copy(exc, item.method))
            return
        except Exception as exc:
            for item in items:
                _fail(item, exc)
            return
        results = await self.channel.batch_results(answer, {k: i.method for k, i in keys.items()})
        for key, item in keys.items():
            result = results[key]
            if result.error is None:
                _succeed(item, result.value)
            elif result.error.retryable:
                await self.gate.refused(result.error, [item.method])
                self._requeue(item, result.error)
            else:
                _fail(item, result.error)

    def _requeue(self, item: _Pending, error: BitrixError) -> None:
        item.attempts += 1
        if item.attempts >= self.channel.retry.max_attempts:
            _fail(item, error)
            return
        metrics.RETRIES.labels(self.gate.key, error.code or type(error).__name__).inc()
        self._queue.append(item)
        self._arrived.set()
        if self._runner is None or self._runner.done():
            self._runner = asyncio.get_running_loop().create_task(self._run())


def _succeed(item: _Pending, value: Any) -> None:
    if not item.future.done():
        item.future.set_result(value)


def _fail(item: _Pending, exc: BaseException) -> None:
    if not item.future.done():
        item.future.set_exception(exc)


def _copy(exc: BitrixError, method: str) -> BitrixError:
    """Each caller gets an error naming its own method, with the batch's code, status and body."""
    clone = type(exc).__new__(type(exc))
    clone.__dict__.update(exc.__dict__)
    clone.args = exc.args
    clone.method = method
    return clone
