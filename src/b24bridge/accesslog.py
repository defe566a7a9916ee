"""One JSON log line per HTTP request, and the correlation id that follows it.

Every request gets a correlation id (the caller's ``X-Request-ID`` when it is a sane one, else a new one), bound to
every log line written while it is handled, answered in ``X-Request-ID``, and handed to the handlers in the request
state: the intakes store it with the run they open, and the run's job binds it again, so one id follows a robot call
or a trigger from the door to the portal and back (``grep`` the logs for it). Raw ASGI, outermost, so requests the
door refuses are logged too.

This runs for every request, so it is kept cheap (measured with py-spy under ``bench/ingest.py``: the line through
structlog's processors was half of what ``/healthz`` cost): with JSON logs the line is rendered by orjson directly
(:func:`b24bridge.observability.write_json_line`, redacted like any other) and written by the log's own thread; the
histogram's children are looked up once per route, method and status; a new correlation id is a counter behind a
random per-process prefix rather than a fresh UUID.
"""

from __future__ import annotations

import itertools
import logging
import os
import re
import time
from typing import Any

import structlog
from prometheus_client import Histogram

from .bodylimit import ASGIApp, Message, Receive, Scope, Send
from .observability import json_lines, redact_text, write_json_line

HEADER = b"x-request-id"
_SANE = re.compile(rb"^[A-Za-z0-9._-]{8,64}$")
LOGGER = "b24bridge.http"

log = structlog.get_logger(LOGGER)
_stdlib_log = logging.getLogger(LOGGER)

HTTP_REQUESTS = Histogram(
    "b24bridge_http_request_seconds",
    "HTTP requests served, by route template (unmatched: 'other'), method and status",
    ["route", "method", "status"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
_observers: dict[tuple[str, str, int], Any] = {}

_PREFIX = os.urandom(5).hex()
_counter = itertools.count(1)


def new_correlation_id() -> str:
    """16 hex characters: 10 random per process, 6 counting (unique within a process for 16 M requests, then a
    repeat is harmless: the id ties lines together, it proves nothing)."""
    return f"{_PREFIX}{next(_counter) & 0xFFFFFF:06x}"


def _observe(template: str, method: str, status: int, elapsed: float) -> None:
    key = (template, method, status)
    observer = _observers.get(key)
    if observer is None:
        # Route templates, methods and statuses are bounded sets: so is this cache.
        observer = _observers[key] = HTTP_REQUESTS.labels(template, method, str(status))
    observer.observe(elapsed)


class AccessLog:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        incoming = b""
        for name, value in scope.get("headers") or ():
            if name == HEADER:
                incoming = value
                break
        correlation_id = incoming.decode() if incoming and _SANE.match(incoming) else new_correlation_id()
        scope.setdefault("state", {})["correlation_id"] = correlation_id
        started = time.perf_counter()
        status = 0
        header = (HEADER, correlation_id.encode())

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
                message["headers"] = [*message.get("headers", ()), header]
            await send(message)

        bound = structlog.contextvars.bind_contextvars(correlation_id=correlation_id)
        try:
            await self.app(scope, receive, send_with_id)
        finally:
            elapsed = time.perf_counter() - started
            route: Any = scope.get("route")
            template = getattr(route, "path", None) or scope.get("b24bridge.route") or "other"
            _observe(template, scope.get("method") or "", status, elapsed)
            if _stdlib_log.isEnabledFor(logging.INFO):
                _write(scope, correlation_id, status, elapsed)
            structlog.contextvars.reset_contextvars(**bound)


def _write(scope: Scope, correlation_id: str, status: int, elapsed: float) -> None:
    client: Any = scope.get("client")
    query = scope.get("query_string", b"")
    fields = {
        "method": scope.get("method"),
        # Only the path and the query can carry a secret (a hook's secret=, an OAuth code=); the rest are numbers.
        "path": redact_text(scope.get("path") or ""),
        "query": redact_text(query.decode("latin-1")[:500]) if query else "",
        "status": status or None,
        "duration_ms": round(elapsed * 1000, 1),
        "client": client[0] if client else None,
    }
    if json_lines():
        write_json_line(LOGGER, "http.request", {**fields, "correlation_id": correlation_id}, redacted=True)
    else:
        log.info("http.request", **fields)
