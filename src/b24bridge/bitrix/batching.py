"""Auto-batching: concurrent ``call()``s to one portal travel together in ``batch`` requests.

The portal counts a batch of 50 commands as one request, so packing independent calls is what lifts a client
from 2 calls per second to 100 under cloud limits. A batch goes out when 50 commands are waiting, when the limiter
grants the next request slot (calls keep gathering while it waits), or after a short window for a lone call.
Each caller gets its own result or its own error.

A *chain* is a few commands that must travel in one request, in order, later ones using the results of earlier
ones (``$result[name]``): a robot's last write and its answer to the workflow, say. Chains share requests with
everything else; a request that carries a halting chain is sent with ``halt``, so a failed command stops the rest of
the batch and nothing after it runs on a false premise. Whatever a halt skipped never ran and is sent again. A
chain of reads whose commands may fail alone (a record that is not there) asks for no halt; it travels before the
halting chains of its request, so its failure halts nothing of theirs.
"""

from __future__ import annotations

import asyncio
import re
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from b24bridge.observability import portal_label

from . import errors, metrics
from .answers import Answer, CommandResult
from .encoding import batch_command
from .errors import BitrixError
from .gate import Gate
from .policy import MAX_BATCH, BatchSettings, RetryPolicy, is_idempotent

Params = Mapping[str, Any] | None
# How far back the bucket's trend looks: long enough to see past one request's tick, short enough to follow a spike.
TREND_SPAN = 2.0
# Net requests a rise must exceed to count as filling.
TREND_STEP = 2.0
_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_]{0,31}$")


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
class _Command:
    name: str  # the chain's own name for it ("" for a single call)
    method: str
    params: Params


@dataclass
class _Pending:
    """One caller's work: a single call (its future gets the value) or a chain (a result per command)."""

    commands: list[_Command]
    chain: bool
    future: asyncio.Future[Any]
    idempotent: bool
    halts: bool = False  # a failed command must stop the rest of the request
    attempts: int = 0
    keys: list[str] = field(default_factory=list)

    @property
    def size(self) -> int:
        return len(self.commands)


class AutoBatcher:
    def __init__(self, channel: Channel, settings: BatchSettings, backlog: Callable[[], int]) -> None:
        self.channel = channel
        self.backlog = backlog
        self.gate = channel.gate
        self.settings = settings
        self._queue: deque[_Pending] = deque()
        self._waiting = 0  # commands in the queue
        self._arrived = asyncio.Event()
        self._slots = asyncio.Semaphore(settings.max_in_flight)
        self._runner: asyncio.Task[None] | None = None
        self._sending: set[asyncio.Task[None]] = set()
        self._levels: deque[tuple[float, float]] = deque()  # (time, fullness) seen by _gather, for the trend
        self._rate = 0.0

    async def submit(self, method: str, params: Params, idempotent: bool) -> Any:
        """One call; its value, or its error raised."""
        return await self._enqueue(_Pending([_Command("", method, params)], False, self._future(), idempotent))

    async def submit_chain(
        self, commands: Sequence[tuple[str, str, Params]], *, halt: bool = True
    ) -> dict[str, CommandResult]:
        """Commands that go together in one request, in order; a result (value or error) per command name.
        ``halt=False``: the commands may fail one by one, nothing needs stopping (reads)."""
        if not commands or len(commands) > MAX_BATCH:
            raise ValueError(f"a chain holds 1 to {MAX_BATCH} commands, got {len(commands)}")
        names = [name for name, _, _ in commands]
        if len(set(names)) != len(names) or not all(_NAME.match(name) for name in names):
            raise ValueError(f"chain command names must be unique identifiers, got {names}")
        chain = [_Command(name, method, params) for name, method, params in commands]
        safe = all(is_idempotent(c.method) for c in chain)
        pending = _Pending(chain, True, self._future(), safe, halts=halt)
        result: dict[str, CommandResult] = await self._enqueue(pending)
        return result

    def _future(self) -> asyncio.Future[Any]:
        return asyncio.get_running_loop().create_future()

    async def _enqueue(self, item: _Pending) -> Any:
        self._push(item)
        return await item.future

    def _push(self, item: _Pending) -> None:
        self._queue.append(item)
        self._waiting += item.size
        self._arrived.set()
        if self._runner is None or self._runner.done():
            self._runner = asyncio.get_running_loop().create_task(self._run())

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
            self._waiting = 0
            raise

    async def _gather(self) -> None:
        """Give a lone call a moment of company; a full batch goes at once.

        While requests go out no faster than the portal drains them, a partial batch costs nothing that does not
        come back: the call goes almost at once (``window``) and the latency floor is one round trip. Once the
        bucket is filling (more requests than the drain over the last seconds), a partial batch waits the longer
        the fuller the bucket is, or the faster it fills, up to one drain interval (once ``1 - burst_reserve`` of
        the burst is used, or when it fills at twice the drain), so a spike is not spent on half-empty requests.
        It never waits longer than that: at steady state a request slot frees up every drain interval anyway.

        A portal with ``backlog_threshold`` or more calls on their way (``backlog``: jobs queued or running for it)
        may be waiting at its limiter before long, so every request it sends should be full: a partial one spends a
        slot of the burst its last calls need (each half-empty request costs them half a drain interval), and its
        calls are behind a queue anyway. Its request waits to fill, up to ``backlog_hold`` drain intervals, for as
        long as calls are still to come (more jobs than calls waiting here). Without this a flood's first requests
        went out a few commands each while its jobs were starting (9 requests for the first 50 commands of 2,000
        bridge deliveries, bench/tenants.py --bridge), a lull mid-flood sent one part full, and its last calls went
        in two requests, half a second apart.
        """
        if self._waiting >= MAX_BATCH or self.settings.window <= 0:
            return
        fullness = await self.gate.fullness()
        share = 0.0
        filling = self._fill_rate(fullness)
        if filling > 1.0 / TREND_SPAN:
            # The fuller the bucket, or the faster it fills (twice the drain: full in seconds), the longer to wait.
            by_level = fullness / max(1e-9, 1.0 - self.settings.burst_reserve)
            share = min(1.0, max(by_level, filling / (2 * self.gate.limits.drain)))
        self._arrived.clear()
        loop = asyncio.get_running_loop()
        began = loop.time()
        base = began + self.settings.window + share / self.gate.limits.drain
        hold = began + self.settings.backlog_hold / self.gate.limits.drain
        while self._waiting < MAX_BATCH:
            # Asked at the start and again after each arrival or wait: a count that lands meanwhile may show calls
            # coming (a flood's first count lands while its first calls wait).
            deadline = max(base, hold) if self._more_coming() else base
            remaining = deadline - loop.time()
            if remaining <= 0:
                return
            try:
                await asyncio.wait_for(self._arrived.wait(), remaining)
            except TimeoutError:
                continue
            self._arrived.clear()
            # Calls still arriving: a wave is coming in (jobs started a few at a time), so the request waits for the
            # rest of it, one more short window after each arrival and never past ``wave_limit``. A lone call, or
            # calls a window apart, go as before. Without this, a flood's first requests (the burst) went out a
            # fraction full: 3 workers sent 232 requests for 200 requests' worth of commands (bench/tests).
            base = max(base, min(loop.time() + self.settings.window, began + self.settings.wave_limit))

    def _more_coming(self) -> bool:
        """Whether the request has calls to wait for: the portal is busy (``backlog_threshold`` jobs or more) and
        some of its jobs have no call waiting here (a running job whose call waits here is counted in both: at a
        flood's end, once every job left has its call here, nothing is held)."""
        coming = self.backlog()
        return coming >= self.settings.backlog_threshold and coming > len(self._queue)

    def _fill_rate(self, fullness: float) -> float:
        """How fast the bucket has been filling, in requests per second beyond the drain, over about
        ``TREND_SPAN`` seconds (the last figure stands until a sample old enough to compare with exists)."""
        now = asyncio.get_running_loop().time()
        samples = self._levels
        samples.append((now, fullness))
        while len(samples) > 1 and now - samples[1][0] >= TREND_SPAN:
            samples.popleft()
        then, before = samples[0]
        if now - then >= TREND_SPAN / 20:
            requests = (fullness - before) * self.gate.limits.capacity
            # A request or two of our own is a step, not a trend (over a short span it would look like a flood).
            self._rate = requests / (now - then) if requests > TREND_STEP else 0.0
        return self._rate

    async def _wait_until_sendable(self) -> bool:
        """Hold back while every waiting method is out of operating-time budget."""
        methods = {c.method for item in self._queue for c in item.commands}
        delays = [await self.gate.method_delay(m) for m in methods]
        if delays and min(delays) > 0:
            await asyncio.sleep(min(delays))
            return False
        return bool(self._queue)

    async def _take(self) -> list[_Pending]:
        """Up to 50 waiting commands, whole chains only, no more of a method than its operating budget holds."""
        allowance: dict[str, int | None] = {}
        items: list[_Pending] = []
        held: list[_Pending] = []
        taken = 0
        while self._queue and taken < MAX_BATCH:
            item = self._queue.popleft()
            self._waiting -= item.size
            if item.future.done():  # the caller was cancelled
                continue
            if taken + item.size > MAX_BATCH or not await self._fits(item, allowance):
                held.append(item)
                continue
            items.append(item)
            taken += item.size
            # Counted now, not when the request starts, so the next batch already sees these calls in flight.
            self.gate.started(c.method for c in item.commands)
        for item in reversed(held):
            self._queue.appendleft(item)
            self._waiting += item.size
        return items

    async def _fits(self, item: _Pending, allowance: dict[str, int | None]) -> bool:
        needed: dict[str, int] = {}
        for command in item.commands:
            needed[command.method] = needed.get(command.method, 0) + 1
        for method, count in needed.items():
            if method not in allowance:
                allowance[method] = await self.gate.allowance(method)
            left = allowance[method]
            if left is not None and left < count:
                return False
        for method, count in needed.items():
            left = allowance[method]
            if left is not None:
                allowance[method] = left - count
        return True

    async def _send(self, items: list[_Pending]) -> None:
        try:
            if len(items) == 1 and not items[0].chain:
                await self._send_one(items[0])
            else:
                await self._send_batch(items)
        finally:
            self._slots.release()

    async def _send_one(self, item: _Pending) -> None:
        command = item.commands[0]
        try:
            answer = await self.channel.execute(
                command.method, command.params, idempotent=item.idempotent, reserved=True
            )
        except Exception as exc:
            _fail(item, exc)
        else:
            _settle(item, answer.result)

    async def _send_batch(self, items: list[_Pending]) -> None:
        # Single calls first, then chains that need no halt, halting chains last: a halting chain's failure stops
        # what follows it, and nothing else needs the halt.
        items.sort(key=lambda item: (item.chain, item.halts))
        cmd: dict[str, str] = {}
        methods: dict[str, str] = {}
        for item in items:
            renamed = {c.name: f"c{len(cmd) + i}" for i, c in enumerate(item.commands)}
            item.keys = list(renamed.values())
            for command, key in zip(item.commands, item.keys, strict=True):
                params = _renamed(command.params, renamed) if item.chain else command.params
                cmd[key] = batch_command(command.method, params)
                methods[key] = command.method
        halt = any(item.halts for item in items)
        try:
            answer = await self.channel.execute(
                "batch",
                {"halt": 1 if halt else 0, "cmd": cmd},
                idempotent=all(item.idempotent for item in items),
                sub_methods=list(methods.values()),
                reserved=True,
            )
        except BitrixError as exc:
            # The whole request failed for good. Retries already happened inside execute(); an uncertain
            # failure still lets idempotent work go again, while writes are reported as uncertain.
            for item in items:
                if exc.uncertain and item.idempotent:
                    self._requeue(item, exc)
                elif item.chain:
                    _settle(item, {c.name: CommandResult(error=_copy(exc, c.method)) for c in item.commands})
                else:
                    _fail(item, _copy(exc, item.commands[0].method))
            return
        except Exception as exc:
            for item in items:
                _fail(item, exc)
            return
        results = await self.channel.batch_results(answer, methods)
        for item in items:
            first = results[item.keys[0]]
            if first.error is not None and first.error.retryable:
                # Nothing of it ran (refused by a limit, or skipped by another command's halt): send it again.
                if not isinstance(first.error, errors.NotExecutedError):
                    await self.gate.refused(first.error, [item.commands[0].method])
                self._requeue(item, first.error, counted=not isinstance(first.error, errors.NotExecutedError))
            elif item.chain:
                _settle(item, {c.name: results[key] for c, key in zip(item.commands, item.keys, strict=True)})
            elif first.error is not None:
                _fail(item, first.error)
            else:
                _settle(item, first.value)

    def _requeue(self, item: _Pending, error: BitrixError, *, counted: bool = True) -> None:
        if counted:
            item.attempts += 1
            if item.attempts >= self.channel.retry.max_attempts:
                if item.chain:
                    _settle(item, {c.name: CommandResult(error=_copy(error, c.method)) for c in item.commands})
                else:
                    _fail(item, error)
                return
            metrics.RETRIES.labels(portal_label(self.gate.key), error.code or type(error).__name__).inc()
        self._push(item)


def _renamed(params: Params, names: Mapping[str, str]) -> Any:
    """``$result[name]`` references of a chain rewritten to the batch keys its commands were given."""
    pattern = re.compile(r"\$result\[(" + "|".join(map(re.escape, names)) + r")\]")

    def walk(value: Any) -> Any:
        if isinstance(value, str):
            return pattern.sub(lambda m: f"$result[{names[m.group(1)]}]", value)
        if isinstance(value, Mapping):
            return {k: walk(v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [walk(v) for v in value]
        return value

    return walk(params)


def _settle(item: _Pending, value: Any) -> None:
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
