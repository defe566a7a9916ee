"""One JSON log line per HTTP request, and the correlation id that follows it.

Every request gets a correlation id (the caller's ``X-Request-ID`` when it is a sane one, else a new one), bound to
every log line written while it is handled, answered in ``X-Request-ID``, and handed to the handlers in the request
state: the intakes store it with the run they open, and the run's job binds it again, so one id follows a robot call
or a trigger from the door to the portal and back (``grep`` the logs for it). Raw ASGI, outermost, so requests the
door refuses are logged too.
"""

from __future__ import annotations

import re
import time
import uuid
from typing import Any

import structlog
from prometheus_client import Histogram

from .bodylimit import ASGIApp, Message, Receive, Scope, Send

HEADER = b"x-request-id"
_SANE = re.compile(rb"^[A-Za-z0-9._-]{8,64}$")

log = structlog.get_logger("b24bridge.http")

HTTP_REQUESTS = Histogram(
    "b24bridge_http_request_seconds",
    "HTTP requests served, by route template (unmatched: 'other'), method and status",
    ["route", "method", "status"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)


def new_correlation_id() -> str:
    return uuid.uuid4().hex[:16]


class AccessLog:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        incoming = dict(scope.get("headers") or []).get(HEADER, b"")
        correlation_id = incoming.decode() if _SANE.match(incoming) else new_correlation_id()
        scope.setdefault("state", {})["correlation_id"] = correlation_id
        started = time.perf_counter()
        status = 0

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
                message["headers"] = [*message.get("headers", []), (HEADER, correlation_id.encode())]
            await send(message)

        with structlog.contextvars.bound_contextvars(correlation_id=correlation_id):
            try:
                await self.app(scope, receive, send_with_id)
            finally:
                elapsed = time.perf_counter() - started
                route: Any = scope.get("route")
                template = getattr(route, "path", None) or "other"  # set by the router: bounded, no ids in it
                HTTP_REQUESTS.labels(template, scope.get("method") or "", str(status or 0)).observe(elapsed)
                client: Any = scope.get("client")
                log.info(
                    "http.request",
                    method=scope.get("method"),
                    path=scope.get("path"),
                    query=scope.get("query_string", b"").decode("latin-1")[:500],
                    status=status or None,
                    duration_ms=round(elapsed * 1000, 1),
                    client=client[0] if client else None,
                )
