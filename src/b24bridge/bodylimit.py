"""The door of the HTTP service: body size caps, a body-read deadline and protocol-safe error answers.

A raw ASGI middleware, outermost around the application, because the install, event and robot endpoints face the
Internet and Bitrix24 never retries a robot call:

* a body larger than the path's cap is answered ``413`` from ``Content-Length`` before a byte of it is read; a
  chunked body is counted while the application reads it and cut off at the cap (the application sees a
  disconnect, the client a ``413``), so nothing beyond the cap is ever read, let alone buffered;
* the body must arrive within ``read_timeout`` seconds of the application asking for it, else ``408``: slow
  senders cannot hold connections;
* a request target (path, query string) with text PostgreSQL cannot hold is answered ``400`` naming the parameter
  (:func:`b24bridge.safetext.target_refusal`), before any route runs;
* a client that goes away mid-upload costs one debug line, not an ERROR traceback;
* an exception escaping the application is answered ``500`` once, as JSON, logged once with its traceback, and
  the connection stays usable: uvicorn on its own closes a kept-alive connection after Starlette's 500 without
  saying ``Connection: close``, so the client's next request on it failed with ECONNRESET.

Every answer of its own is JSON (``{"error": "..."}``). Whenever a response starts before the request body was
read to its end, the response says ``Connection: close``: the server then never has to drain, at the sender's
pace, a body nobody wants.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable, Iterable, Mapping, MutableMapping
from typing import Any

import structlog

from .safetext import TextRefused, target_refusal

# Plain ASGI, spelled as starlette.types does (so a FastAPI app fits) without importing the web framework.
Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

__all__ = ["B24BRIDGE_LIMITS", "DEFAULT_LIMIT", "DEFAULT_READ_TIMEOUT", "BodyLimit"]

KIB = 1024
MIB = 1024 * KIB
DEFAULT_LIMIT = 1 * MIB
DEFAULT_READ_TIMEOUT = 10.0
# Robot calls and events are a few KB (REFERENCE 5.4, 7.2); the install forms (4.3) smaller still.
B24BRIDGE_LIMITS: Mapping[str, int] = {"/robots": 1 * MIB, "/events": 1 * MIB, "/install": 64 * KIB}
# A 500 from the application is held back until the application returns, so that Starlette's plain-text 500
# (sent by its ServerErrorMiddleware just before it re-raises) can be replaced by ours. Larger ones pass. (So a
# 500 with background tasks goes out when they end; b24bridge queues work in procrastinate, not in those.)
_HELD_500_MAX = 64 * KIB
_DISCONNECT: Message = {"type": "http.disconnect"}

log = structlog.get_logger("b24bridge.http")


class BodyLimit:
    """Wrap ``app``: ``BodyLimit(app, limits={"/robots": 1 << 20}, default_limit=1 << 20, read_timeout=10.0)``.

    ``path_parameter(scope)`` names the path parameter that holds text refused in the path (else it is "path").
    ``limits`` maps path prefixes to a body cap in bytes; a prefix covers itself and what lies below it
    (``/install`` covers ``/install/page``, not ``/installer``); the longest matching prefix wins and
    ``default_limit`` covers every other path.
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        limits: Mapping[str, int] = B24BRIDGE_LIMITS,
        default_limit: int = DEFAULT_LIMIT,
        read_timeout: float = DEFAULT_READ_TIMEOUT,
        path_parameter: Callable[[Scope], str | None] | None = None,
    ) -> None:
        self.app = app
        # Which path parameter holds the bad text (the app's routes know; this middleware does not).
        self.path_parameter = path_parameter
        self.default_limit = default_limit
        self.read_timeout = read_timeout
        prefixes = ((prefix.rstrip("/"), limit) for prefix, limit in limits.items())
        self._limits = sorted(prefixes, key=lambda item: len(item[0]), reverse=True)

    def limit_for(self, path: str) -> int:
        for prefix, limit in self._limits:
            if path == prefix or path.startswith(prefix + "/"):
                return limit
        return self.default_limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        await _Exchange(self, scope, receive, send).run()


def _declared_length(headers: Iterable[tuple[bytes, bytes]]) -> tuple[int | None, bool]:
    """``(Content-Length or None, whether the request has a body)``; a length of -1 means unreadable."""
    lengths = {value.strip() for name, value in headers if name.lower() == b"content-length"}
    chunked = any(name.lower() == b"transfer-encoding" for name, _ in headers)
    if not lengths:
        return None, chunked
    value = lengths.pop()
    # bytes.isdigit() is ASCII only; 18 digits keep int() cheap (the servers reject worse before we see it).
    if lengths or not value.isdigit() or len(value) > 18:
        return -1, True
    length = int(value)
    return length, chunked or length > 0


class _Exchange:
    """One request and its response, as the middleware sees them pass."""

    def __init__(self, config: BodyLimit, scope: Scope, receive: Receive, send: Send) -> None:
        self.config = config
        self.scope = scope
        self.server_receive = receive
        self.server_send = send
        self.limit = config.limit_for(scope["path"])
        self.declared, has_body = _declared_length(scope["headers"])
        self.body_done = not has_body  # the server said more_body=False
        self.received = 0
        self.deadline: float | None = None  # set when the application first waits for the body
        self.stopped = False  # the body was cut off (413/408): the application reads a disconnect from then on
        self.answered = False  # our own answer went out: the application's sends are dropped
        self.client_gone = False
        self.started = False  # the server has been sent a response start
        self.complete = False
        self.held: list[Message] | None = None
        self.held_size = 0

    async def run(self) -> None:
        # Text PostgreSQL cannot hold (a NUL, bytes that are not UTF-8) is refused before any route sees it.
        bad_text = target_refusal(_raw_path(self.scope), self.scope.get("query_string", b""))
        if bad_text is not None:
            if bad_text.field == "path" and self.config.path_parameter is not None:
                bad_text = TextRefused(self.config.path_parameter(self.scope) or "path", bad_text.reason)
            log.info("http.target_refused", method=self.scope["method"], field=bad_text.field, reason=bad_text.reason)
            await self.answer(400, str(bad_text), field=bad_text.field)
            return
        if self.declared == -1:
            await self.answer(400, "invalid Content-Length header")
            return
        if self.declared is not None and self.declared > self.limit:
            self._refused(413)
            await self.answer(413, f"request body larger than {self.limit} bytes")
            return
        try:
            await self.config.app(self.scope, self.receive, self.send)
        except Exception as exc:
            await self.failed(exc)
        else:
            await self.finished()

    # --- what the application sees ---------------------------------------------------------------------------

    async def receive(self) -> Message:
        if self.stopped:
            return _DISCONNECT
        if self.body_done:
            # Past the body only a disconnect can come (a streaming response listens for it): no deadline.
            message = await self.server_receive()
        else:
            loop = asyncio.get_running_loop()
            if self.deadline is None:
                self.deadline = loop.time() + self.config.read_timeout
            try:
                async with asyncio.timeout_at(self.deadline):
                    message = await self.server_receive()
            except TimeoutError:
                await self.stop(408, f"request body not received within {self.config.read_timeout:g} seconds")
                return _DISCONNECT
        if message["type"] == "http.disconnect":
            # uvicorn also says "disconnect" to reads after a complete response; that is no client leaving.
            self.client_gone = self.client_gone or not self.complete
        elif message["type"] == "http.request":
            self.received += len(message.get("body", b""))
            if self.received > self.limit:
                # This chunk is withheld: the application never sees more than the cap.
                await self.stop(413, f"request body larger than {self.limit} bytes")
                return _DISCONNECT
            if not message.get("more_body", False):
                self.body_done = True
        return message

    async def send(self, message: Message) -> None:
        if self.answered:
            return  # the application's answer has nowhere to go
        if message["type"] == "http.response.start":
            if not self.body_done:
                message = _with_connection_close(message)
            if message["status"] == 500:
                self.held, self.held_size = [message], 0
                return
        elif self.held is not None:
            self.held.append(message)
            self.held_size += len(message.get("body", b""))
            if self.held_size > _HELD_500_MAX:
                await self.flush_held()
            return
        await self.forward(message)

    # --- what the server sees --------------------------------------------------------------------------------

    async def forward(self, message: Message) -> None:
        if message["type"] == "http.response.start":
            self.started = True
        elif message["type"] == "http.response.body" and not message.get("more_body", False):
            self.complete = True
        await self.server_send(message)

    async def flush_held(self) -> None:
        held, self.held = self.held or [], None
        for message in held:
            await self.forward(message)

    async def answer(self, status: int, error: str, field: str | None = None) -> None:
        """Our own JSON answer; it closes the connection unless the request body was read to its end."""
        body = json.dumps({"error": error} if field is None else {"error": error, "field": field}).encode()
        headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
        if not self.body_done:
            headers.append((b"connection", b"close"))
        self.held, self.answered = None, True
        await self.forward({"type": "http.response.start", "status": status, "headers": headers})
        await self.forward({"type": "http.response.body", "body": body, "more_body": False})

    async def stop(self, status: int, error: str) -> None:
        """Cut the body off: the application reads a disconnect from now on and the client gets ``status``."""
        self.stopped = True
        self._refused(status)
        if not self.started:
            await self.answer(status, error)
        # Otherwise the response started before the body ended, so it already carries Connection: close.

    async def finished(self) -> None:
        if self.held is not None:
            await self.flush_held()
        elif not self.started and not self.client_gone:
            log.error("http.no_response", method=self.scope["method"], path=self.scope["path"])
            await self.answer(500, "internal error")

    async def failed(self, exc: Exception) -> None:
        where = {"method": self.scope["method"], "path": self.scope["path"]}
        if self.answered or self.client_gone:
            # The application tripped over the disconnect it was handed (starlette's ClientDisconnect): expected,
            # and nobody is left to answer. uvicorn stays quiet too: the exception ends here.
            if not self.answered:
                log.debug("http.client_disconnected", **where, received=self.received, error=type(exc).__name__)
            return
        if self.complete:
            log.error("http.unhandled_error", **where, exc_info=exc)
            return
        if self.started:
            # Half a response is out: only closing the connection tells the client it is broken. uvicorn
            # does that for an exception it catches, and logs it (once, through the redacting pipeline).
            raise exc
        log.error("http.unhandled_error", **where, exc_info=exc)
        await self.answer(500, "internal error")

    def _refused(self, status: int) -> None:
        log.info(
            "http.body_refused",
            status=status,
            method=self.scope["method"],
            path=self.scope["path"],
            limit=self.limit,
            declared=self.declared,
            received=self.received,
        )


def _raw_path(scope: Scope) -> bytes:
    raw: bytes | None = scope.get("raw_path")
    # raw_path is optional in ASGI; "surrogatepass" keeps a lone surrogate as bytes strict UTF-8 then refuses.
    return raw if raw is not None else str(scope["path"]).encode("utf-8", "surrogatepass")


def _with_connection_close(message: Message) -> Message:
    headers: list[Any] = list(message.get("headers", []))
    if not any(name.lower() == b"connection" and b"close" in value.lower() for name, value in headers):
        headers.append((b"connection", b"close"))
    return {**message, "headers": headers}
