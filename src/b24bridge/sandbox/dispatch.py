"""Running methods as the portal does: checks, limits, timing, and ``batch`` with ``$result`` references."""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from typing import Any

from . import errors
from .auth import authorize
from .errors import RestError
from .registry import METHODS, Call, Caller, Page
from .runtime import Sandbox
from .wire import lower_keys, parse_php_query, time_block

MAX_BATCH = 50
_NOT_BATCHABLE = {"batch"}
_REFERENCE = re.compile(r"\$(result|result_error|result_total|result_next|result_time)((?:\[[^\]]*\])+)")
_TRUE = {"1", "true", "y", "yes", "on"}


@dataclass
class Outcome:
    value: Any
    time: dict[str, Any]


async def run_method(sandbox: Sandbox, caller: Caller, method: str, params: dict[str, Any]) -> Outcome:
    """Run one method for an authenticated caller; raises ``RestError`` like the portal answers it."""
    spec = METHODS.get(method)
    if spec is None:
        raise errors.method_not_found()
    authorize(caller, spec)
    limiter = sandbox.limiter
    budget = limiter.budget(caller.budget_key, method) if limiter.enabled else None
    start = sandbox.now()
    if budget is not None and budget.blocked(start):
        limiter.refused_operating += 1
        raise errors.operation_time_limit()
    began = time.perf_counter()
    call = Call(sandbox, caller, method, params)
    try:
        value = await spec.handler(call) if spec.is_async else spec.handler(call)
    finally:
        processing = time.perf_counter() - began
        if budget is not None:
            budget.spend(start, sandbox.config.cost_of(method) + processing)
    timing = time_block(start, sandbox.now(), processing, sandbox.tz)
    if budget is not None:
        reset_at = budget.reset_at()
        if reset_at is not None:
            timing["operating_reset_at"] = reset_at
        timing["operating"] = budget.used()
    return Outcome(value, timing)


def envelope(outcome: Outcome) -> dict[str, Any]:
    value = outcome.value
    if isinstance(value, Page):
        body: dict[str, Any] = {"result": value.result}
        if value.next is not None:
            body["next"] = value.next
        body["total"] = value.total
    else:
        body = {"result": value}
    body["time"] = outcome.time
    return body


async def run_batch(sandbox: Sandbox, caller: Caller, params: dict[str, Any]) -> dict[str, Any]:
    commands = params.get("cmd")
    if isinstance(commands, list):
        commands = {str(i): c for i, c in enumerate(commands)}
    if not isinstance(commands, dict):
        commands = {}
    if len(commands) > MAX_BATCH:
        raise RestError("ERROR_BATCH_LENGTH_EXCEEDED", "Max batch length exceeded", 400)
    halt = str(params.get("halt", "")).lower() in _TRUE
    sections: dict[str, dict[str, Any]] = {
        "result": {},
        "result_error": {},
        "result_total": {},
        "result_next": {},
        "result_time": {},
    }
    for key, command in commands.items():
        method, _, query = str(command).partition("?")
        method = method.strip().strip("/").lower().removesuffix(".json")
        try:
            if method in _NOT_BATCHABLE or (method in METHODS and not METHODS[method].batchable):
                raise RestError("ERROR_BATCH_METHOD_NOT_ALLOWED", "Method is not allowed for batch usage", 405)
            sub_params = lower_keys(_substitute(parse_php_query(query), sections))
            sub_params.pop("auth", None)
            outcome = await run_method(sandbox, caller, method, sub_params)
        except RestError as exc:
            sections["result_error"][key] = {"error": exc.code, "error_description": exc.description}
            if halt:
                break
            continue
        value = outcome.value
        if isinstance(value, Page):
            sections["result"][key] = value.result
            sections["result_total"][key] = value.total
            if value.next is not None:
                sections["result_next"][key] = value.next
        else:
            sections["result"][key] = value
        sections["result_time"][key] = outcome.time
    return sections


def _substitute(value: Any, sections: dict[str, dict[str, Any]]) -> Any:
    """Replace ``$result[key][FIELD]...`` with values of earlier commands, recursively in every string."""
    if isinstance(value, dict):
        return {k: _substitute(v, sections) for k, v in value.items()}
    if isinstance(value, list):
        return [_substitute(v, sections) for v in value]
    if not isinstance(value, str) or "$result" not in value:
        return value
    whole = _REFERENCE.fullmatch(value)
    if whole:
        # A bare reference keeps the referenced value whole, so an array (e.g. a list of IDs) passes through.
        return _resolve(whole, sections)
    return _REFERENCE.sub(lambda m: _scalar(_resolve(m, sections)), value)


def _resolve(match: re.Match[str], sections: dict[str, dict[str, Any]]) -> Any:
    node: Any = sections[match.group(1)]
    for part in re.findall(r"\[([^\]]*)\]", match.group(2)):
        if isinstance(node, dict):
            node = node.get(part, node.get(part.upper()))
        elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
        else:
            return ""
        if node is None:
            return ""
    return node


def _scalar(value: Any) -> str:
    if isinstance(value, bool):
        return "1" if value else ""
    if isinstance(value, dict | list):
        return "Array"  # what PHP prints when an array is used as a string
    return str(value)
