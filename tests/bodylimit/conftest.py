"""What the body-limit tests share: a tiny application behind the middleware, a raw HTTP/1.1 client, and a real
uvicorn on loopback (httptools and h11) serving the application.

A raw socket is the only client that can send just headers, a body at a chosen pace, or half a body and hang up,
and that sees exactly what the server does with a kept-alive connection.
"""

from __future__ import annotations

import json
import logging
import select
import socket
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from b24bridge import bodylimit
from b24bridge.bodylimit import BodyLimit
from b24bridge.forms import FormError, parse_form
from tests.livehttp import LiveServer

KIB = 1024
MIB = 1024 * KIB
LIMITS = {"/robots": 1 * MIB, "/install": 64 * KIB, "/stream": 64 * KIB}
READ_TIMEOUT = 1.0

# --- the application --------------------------------------------------------------------------------------


@dataclass
class Seen:
    """What the application saw: the paths it was called for and the running byte count of /stream."""

    calls: list[str] = field(default_factory=list)
    streamed: list[int] = field(default_factory=list)


def make_app(seen: Seen | None = None) -> ASGIApp:
    """A tiny Starlette app behind the middleware; also the app of the server subprocess (``make_app()``)."""
    record = seen or Seen()

    async def form(request: Request) -> JSONResponse:
        record.calls.append(request.url.path)
        try:
            parsed = parse_form(await request.body())
        except FormError as exc:
            return JSONResponse(exc.payload(), exc.status)
        return JSONResponse({"fields": len(parsed)})

    async def stream(request: Request) -> JSONResponse:
        record.calls.append(request.url.path)
        total = 0
        async for chunk in request.stream():  # raises ClientDisconnect when the body is cut off
            total += len(chunk)
            record.streamed.append(total)
        return JSONResponse({"received": total})

    async def boom(request: Request) -> JSONResponse:
        await request.body()
        raise RuntimeError("boom")

    async def ok(request: Request) -> JSONResponse:
        return JSONResponse({"ok": True})

    routes = [
        Route("/robots/{code}", form, methods=["POST"]),
        Route("/install", form, methods=["POST"]),
        Route("/stream", stream, methods=["POST"]),
        Route("/boom", boom, methods=["GET", "POST"]),
        Route("/ok", ok, methods=["GET"]),
    ]
    starlette = Starlette(routes=routes)

    async def dispatch(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"] == "/raw/boom":
            raise RuntimeError("raw boom")  # no Starlette around it: nothing has answered yet
        await starlette(scope, receive, send)

    return BodyLimit(dispatch, limits=LIMITS, read_timeout=READ_TIMEOUT)


# --- a raw HTTP/1.1 client ----------------------------------------------------------------------------------


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


class Connection:
    """One TCP connection; requests are written as given and answers read one at a time."""

    def __init__(self, port: int, timeout: float = 5.0) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.buffer = b""

    def __enter__(self) -> Connection:
        return self

    def __exit__(self, *exc: object) -> None:
        self.sock.close()

    def _fill(self) -> None:
        data = self.sock.recv(65536)
        if not data:
            raise ConnectionError(f"closed before a whole answer: {self.buffer!r}")
        self.buffer += data

    def answer(self) -> Answer:
        while b"\r\n\r\n" not in self.buffer:
            self._fill()
        head, self.buffer = self.buffer.split(b"\r\n\r\n", 1)
        status_line, *lines = head.decode("latin-1").split("\r\n")
        headers = {name.lower(): value.strip() for name, value in (line.split(":", 1) for line in lines)}
        length = int(headers.get("content-length", "0"))
        while len(self.buffer) < length:
            self._fill()
        body, self.buffer = self.buffer[:length], self.buffer[length:]
        return Answer(int(status_line.split()[1]), headers, body)

    def closed_by_server(self, within: float = 2.0) -> bool:
        self.sock.settimeout(within)
        try:
            return self.sock.recv(1) == b""
        except ConnectionResetError:
            return True
        except TimeoutError:
            return False

    def stream(self, chunks: Iterator[bytes], limit: int) -> int:
        """Send chunks until the server answers or stops reading; the number of bytes that left this side."""
        self.sock.setblocking(False)
        sent, pending = 0, b""
        try:
            while sent < limit:
                readable, writable, _ = select.select([self.sock], [self.sock], [], 5.0)
                if readable or not writable:
                    break
                pending = pending or next(chunks, b"")
                if not pending:
                    break
                count = self.sock.send(pending)
                sent, pending = sent + count, pending[count:]
        except (BrokenPipeError, ConnectionResetError):
            pass
        finally:
            self.sock.setblocking(True)
            self.sock.settimeout(5.0)
        return sent


def head(method: str, path: str, *extra: str) -> bytes:
    return "\r\n".join([f"{method} {path} HTTP/1.1", "Host: test", *extra, "", ""]).encode()


def post(path: str, body: bytes) -> bytes:
    return head("POST", path, f"Content-Length: {len(body)}", "Content-Type: application/x-www-form-urlencoded") + body


def chunked(pieces: Iterator[bytes]) -> Iterator[bytes]:
    for piece in pieces:
        yield b"%x\r\n%s\r\n" % (len(piece), piece)
    yield b"0\r\n\r\n"


def pairs(total: int, piece: int = 64 * KIB) -> Iterator[bytes]:
    """``total`` bytes of short ``k=v&`` pairs."""
    block = b"k=v&" * (piece // 4)
    for _ in range(total // piece):
        yield block


# --- fixtures -----------------------------------------------------------------------------------------------


class RecordingLog:
    """Stands in for the middleware's structlog logger."""

    def __init__(self) -> None:
        self.records: list[tuple[str, str, dict[str, Any]]] = []

    def __getattr__(self, level: str) -> Any:
        return lambda event, **fields: self.records.append((level, event, fields))

    def events(self, level: str) -> list[str]:
        return [event for lvl, event, _ in self.records if lvl == level]


class Errors(logging.Handler):
    """Every stdlib record at ERROR or above: uvicorn's "Exception in ASGI application", asyncio's complaints."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture(scope="module", params=["httptools", "h11"])
def live(request: pytest.FixtureRequest) -> Iterator[tuple[LiveServer, Seen]]:
    seen = Seen()
    with pytest.MonkeyPatch.context() as patch:
        # LiveServer builds its own uvicorn.Config: choose the HTTP implementation through it.
        config = uvicorn.Config
        patch.setattr(uvicorn, "Config", lambda app, **kw: config(app, **kw, http=request.param))
        server = LiveServer(lambda port: make_app(seen))
    try:
        yield server, seen
    finally:
        server.stop()


@pytest.fixture
def port(live: tuple[LiveServer, Seen]) -> int:
    return live[0].port


@pytest.fixture
def seen(live: tuple[LiveServer, Seen]) -> Seen:
    live[1].calls.clear()
    live[1].streamed.clear()
    return live[1]


@pytest.fixture
def logs(monkeypatch: pytest.MonkeyPatch, live: tuple[LiveServer, Seen]) -> Iterator[tuple[RecordingLog, Errors]]:
    recording = RecordingLog()
    monkeypatch.setattr(bodylimit, "log", recording)
    errors = Errors()
    # uvicorn's own loggers do not propagate to the root logger: listen on each.
    names = ["", "uvicorn", "uvicorn.error", "asyncio"]
    for name in names:
        logging.getLogger(name).addHandler(errors)
    try:
        yield recording, errors
    finally:
        for name in names:
            logging.getLogger(name).removeHandler(errors)
