"""A connection to one portal: single calls (auto-batched), explicit batches, whole lists.

Built by :meth:`BitrixClient.portal`. Under it: :class:`~.sender.Sender` (limits, refresh, retries) over
:class:`~.transport.Transport` (one HTTP request); concurrent ``call()``s share requests through the
:class:`~.batching.AutoBatcher`.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from typing import Any

from b24bridge.observability import portal_label

from . import metrics
from .answers import Answer, CallObserver, CallRecord, CommandResult
from .auth import Auth, TokenPair
from .batching import AutoBatcher
from .encoding import batch_command
from .errors import AuthLostError, BitrixError, NotExecutedError
from .listing import export_rows, iterate_pages
from .policy import MAX_BATCH, NOT_BATCHABLE, BatchSettings, is_idempotent
from .sender import Params, Sender

Commands = Mapping[str, tuple[str, Params]] | Sequence[tuple[str, Params]]


class Portal:
    def __init__(self, sender: Sender, batching: BatchSettings, backlog: Callable[[], int]) -> None:
        self.sender = sender
        self._batching = batching
        self._backlog = backlog
        self._batcher: AutoBatcher | None = None

    @property
    def key(self) -> str:
        """What names this portal for limits, locks and metrics (its member_id, or its domain)."""
        return self.sender.key

    @property
    def auth(self) -> Auth:
        return self.sender.transport.auth

    @property
    def auth_lost(self) -> AuthLostError | None:
        return self.sender.tokens.lost

    def set_tokens(self, tokens: TokenPair) -> None:
        """New tokens from outside (re-install, re-authorisation): also clears a lost-auth state."""
        self.sender.tokens.set_tokens(tokens)

    async def call(
        self,
        method: str,
        params: Params = None,
        *,
        idempotent: bool | None = None,
        observer: CallObserver | None = None,
    ) -> Any:
        """Call ``method`` and return its ``result``; concurrent calls share batch requests when enabled.

        ``observer`` hears how the call ended (the run log records a run's calls through it).
        """
        method = method.lower()
        safe = is_idempotent(method) if idempotent is None else idempotent
        started = time.monotonic()
        try:
            if self._batching.enabled and method not in NOT_BATCHABLE:
                result = await self._auto_batcher().submit(method, params, safe)
            else:
                result = (await self.sender.execute(method, params, idempotent=safe)).result
        except BitrixError as exc:
            metrics.CALLS.labels(portal_label(self.key), method, exc.retry.value).inc()
            if observer is not None:
                await observer(CallRecord.of_error(method, exc, time.monotonic() - started))
            raise
        metrics.CALLS.labels(portal_label(self.key), method, "ok").inc()
        if observer is not None:
            await observer(CallRecord(method, "ok", time.monotonic() - started))
        return result

    def _auto_batcher(self) -> AutoBatcher:
        if self._batcher is None:
            self._batcher = AutoBatcher(self.sender, self._batching, self._backlog)
        return self._batcher

    async def chain(
        self,
        commands: Sequence[tuple[str, str, Params]],
        *,
        observer: CallObserver | None = None,
        halt: bool = True,
    ) -> dict[str, CommandResult]:
        """Commands that must go in one request, in order: ``(name, method, params)``; later ones may use
        ``$result[name]`` of earlier ones. A failed command stops the rest of the chain (``halt``); ``halt=False``
        for reads that may fail one by one. With auto-batching, chains share requests with other calls. Returns a
        result (value or error) per name.
        """
        lowered = [(name, method.lower(), params) for name, method, params in commands]
        started = time.monotonic()
        if self._batching.enabled:
            results = await self._auto_batcher().submit_chain(lowered, halt=halt)
        else:
            results = await self.batch({name: (method, params) for name, method, params in lowered}, halt=halt)
        duration = time.monotonic() - started
        for name, method, _ in lowered:
            error = results[name].error
            if isinstance(error, NotExecutedError):
                continue  # never ran: nothing to count or record
            metrics.CALLS.labels(portal_label(self.key), method, "ok" if error is None else error.retry.value).inc()
            if observer is not None:
                record = (
                    CallRecord(method, "ok", duration)
                    if error is None
                    else CallRecord.of_error(method, error, duration)
                )
                await observer(record)
        return results

    async def request(self, method: str, params: Params = None, *, idempotent: bool | None = None) -> Answer:
        """One method in one HTTP request of its own (no auto-batching), with limits and retries."""
        method = method.lower()
        safe = is_idempotent(method) if idempotent is None else idempotent
        return await self.sender.execute(method, params, idempotent=safe)

    async def batch(self, commands: Commands, *, halt: bool = False) -> dict[str, CommandResult]:
        """Run up to 50 commands in one request; later ones may use ``$result[key][FIELD]`` of earlier ones."""
        named = dict(commands) if isinstance(commands, Mapping) else {str(i): c for i, c in enumerate(commands)}
        if len(named) > MAX_BATCH:
            raise ValueError(f"a batch holds at most {MAX_BATCH} commands, got {len(named)}")
        methods = {key: method.lower() for key, (method, _) in named.items()}
        cmd = {key: batch_command(methods[key], params) for key, (_, params) in named.items()}
        answer = await self.sender.execute(
            "batch",
            {"halt": 1 if halt else 0, "cmd": cmd},
            idempotent=all(is_idempotent(m) for m in methods.values()),
            sub_methods=list(methods.values()),
        )
        return await self.sender.batch_results(answer, methods)

    def list(self, method: str, params: Params = None) -> AsyncIterator[Any]:
        """Every row of a list method, page by page (remaining pages fetched 50 at a time in batches)."""
        return iterate_pages(self, method.lower(), dict(params or {}))

    def export(self, method: str, params: Params = None, *, id_field: str = "ID") -> AsyncIterator[Any]:
        """Fast export of large sets: ``start=-1`` with a moving ``>ID`` filter, pages chained inside batches."""
        return export_rows(self, method.lower(), dict(params or {}), id_field)
