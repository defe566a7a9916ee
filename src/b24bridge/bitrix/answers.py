"""What comes back from a portal: answers, the per-command results of a batch, and what observers are told."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from . import errors
from .policy import is_idempotent


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
    error: errors.BitrixError | None = None
    total: int | None = None
    next: int | None = None
    time: dict[str, Any] = field(default_factory=dict)

    def unwrap(self) -> Any:
        if self.error is not None:
            raise self.error
        return self.value


Outcome = Literal["ok", "error", "uncertain"]


@dataclass(frozen=True)
class CallRecord:
    """One REST call as an observer sees it once it has finished (the run log records these)."""

    method: str
    outcome: Outcome
    duration: float
    error: str | None = None

    @classmethod
    def of_error(cls, method: str, exc: errors.BitrixError, duration: float) -> CallRecord:
        return cls(method, "uncertain" if exc.uncertain else "error", duration, str(exc))


CallObserver = Callable[[CallRecord], Awaitable[None]]


def decode_batch(answer: Answer, methods: Mapping[str, str], *, portal: str) -> dict[str, CommandResult]:
    """Each command's result or error from a ``batch`` answer; commands a halt skipped come back as not executed."""
    sections = answer.result if isinstance(answer.result, dict) else {}
    values = _section(sections, "result")
    failures = _section(sections, "result_error")
    totals = _section(sections, "result_total")
    nexts = _section(sections, "result_next")
    times = _section(sections, "result_time")
    results: dict[str, CommandResult] = {}
    for key, method in methods.items():
        timing = times.get(key)
        timing = timing if isinstance(timing, dict) else {}
        if key in failures:
            error = errors.command_error(method, failures[key], portal=portal, idempotent=is_idempotent(method))
            results[key] = CommandResult(error=error, time=timing)
        elif key in values:
            results[key] = CommandResult(values[key], None, totals.get(key), nexts.get(key), timing)
        else:
            results[key] = CommandResult(error=errors.NotExecutedError("not executed (batch halted)", method=method))
    return results


def _section(sections: Mapping[str, Any], name: str) -> dict[str, Any]:
    value = sections.get(name)
    if isinstance(value, dict):
        return value
    if isinstance(value, list):  # PHP sends a map keyed 0..n-1 as a list
        return {str(i): v for i, v in enumerate(value)}
    return {}


def unwrap_items(result: Any) -> list[Any]:
    """A list method's rows: a plain list, or ``{"items": [...]}`` (crm.item.list) and similar one-key maps."""
    if isinstance(result, list):
        return result
    if isinstance(result, dict):
        lists = [v for v in result.values() if isinstance(v, list)]
        if len(lists) == 1:
            return lists[0]
    return []
