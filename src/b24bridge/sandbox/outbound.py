"""Calls the portal makes to applications: install events, bound events, robot calls.

Like the real queue server, a call is made once and never retried; every call is recorded with its outcome so
that tests and integrators can see exactly what was sent, how the handler answered and how long it took.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import httpx

from .runtime import Sandbox
from .wire import php_pairs

log = logging.getLogger("b24bridge.sandbox")

SLOW_HANDLER_SECONDS = 2.0
MAX_RECORDED_CALLS = 100_000


async def post_form(sandbox: Sandbox, kind: str, url: str, payload: dict[str, Any], **meta: Any) -> dict[str, Any]:
    """POST ``payload`` form-encoded with PHP brackets to ``url``; return the recorded call."""
    world = sandbox.world
    record: dict[str, Any] = {
        "id": world.next_id("handler_call"),
        "kind": kind,
        "url": url,
        "payload": payload,
        "at": sandbox.now(),
        **meta,
    }
    world.handler_calls.append(record)
    if len(world.handler_calls) > MAX_RECORDED_CALLS:
        del world.handler_calls[: len(world.handler_calls) - MAX_RECORDED_CALLS]
    began = time.perf_counter()
    try:
        response = await sandbox.http.post(
            url,
            data=dict(php_pairs(payload)),
            headers={"User-Agent": "Bitrix24 Webhook Engine (sandbox)"},
        )
        record["status"] = response.status_code
        record["ok"] = 200 <= response.status_code < 300
        record["response"] = response.text[:2000]
        if not record["ok"]:
            record["error"] = f"handler answered HTTP {response.status_code}"
    except httpx.HTTPError as exc:
        record["status"] = None
        record["ok"] = False
        record["error"] = f"{type(exc).__name__}: {exc}"
    record["duration"] = time.perf_counter() - began
    record["slow"] = record["duration"] > SLOW_HANDLER_SECONDS
    if not record["ok"] or record["slow"]:
        log.warning("handler call %s to %s: %s", kind, url, record.get("error") or "slow")
    return record
