"""The body-limit middleware in front of a real uvicorn on loopback, spoken to over raw sockets.

A raw socket is the only client that can send just headers, a body at a chosen pace, or half a body and hang up,
and that sees exactly what the server does with a kept-alive connection.
"""

from __future__ import annotations

import contextlib
import json
import logging
import select
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from b24bridge import bodylimit
from b24bridge.bodylimit import BodyLimit
from b24bridge.forms import FormError, parse_form
from tests.livehttp import LiveServer, free_socket

KIB = 1024
MIB = 1024 * KIB
LIMITS = {"/robots": 1 * MIB, "/install": 64 * KIB, "/stream": 64 * KIB}
READ_TIMEOUT = 1.0
REPO = Path(__file__).resolve().parents[1]

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


# --- tests --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/robots/send_sms", "/install"])
def test_content_length_over_the_cap_is_refused_before_reading(port: int, seen: Seen, path: str) -> None:
    with Connection(port) as conn:
        started = time.monotonic()
        conn.sock.sendall(head("POST", path, "Content-Length: 52428800", "Expect: 100-continue"))
        answer = conn.answer()
        assert time.monotonic() - started < 1.0
        assert answer.status == 413  # not "100 Continue": the body is never asked for
        assert answer.headers["content-type"] == "application/json"
        assert answer.headers["connection"] == "close"
        assert "larger than" in answer.json()["error"]
        assert conn.closed_by_server()
    assert seen.calls == []


def test_install_cap_is_smaller_than_the_robot_cap(port: int, seen: Seen) -> None:
    body = b"a=" + b"x" * (100 * KIB)
    with Connection(port) as conn:
        conn.sock.sendall(post("/robots/x", body))
        assert conn.answer().json() == {"fields": 1}
        conn.sock.sendall(post("/install", body))
        assert conn.answer().status == 413


def test_chunked_body_over_the_cap_is_cut_off(port: int, seen: Seen, logs: tuple[RecordingLog, Errors]) -> None:
    with Connection(port) as conn:
        conn.sock.sendall(head("POST", "/stream", "Transfer-Encoding: chunked"))
        sent = conn.stream(chunked(pairs(200 * MIB, 16 * KIB)), 200 * MIB)
        answer = conn.answer()
        assert answer.status == 413
        assert answer.headers["connection"] == "close"
        assert conn.closed_by_server()
    assert sent < 20 * MIB  # the server stopped reading soon after the cap
    assert seen.calls == ["/stream"]
    assert max(seen.streamed, default=0) <= 64 * KIB  # uvicorn may hand over more at once: then it saw nothing
    recording, errors = logs
    assert errors.records == []
    assert "http.body_refused" in recording.events("info")


def test_slow_sender_gets_408_within_the_timeout(port: int, seen: Seen) -> None:
    with Connection(port) as conn:
        conn.sock.sendall(post("/robots/x", b"a=" + b"x" * 998)[:-900])  # 100 of 1000 bytes, then silence
        started = time.monotonic()
        answer = conn.answer()
        elapsed = time.monotonic() - started
        assert answer.status == 408
        assert answer.headers["connection"] == "close"
        assert answer.headers["content-type"] == "application/json"
        assert READ_TIMEOUT * 0.9 < elapsed < READ_TIMEOUT + 1.5
        assert conn.closed_by_server()


@pytest.mark.parametrize(
    "request_bytes",
    [post("/boom", b"a=1"), head("GET", "/boom"), head("GET", "/raw/boom")],
    ids=["starlette-post", "starlette-get", "raw-asgi"],
)
def test_500_keeps_the_connection_usable(port: int, logs: tuple[RecordingLog, Errors], request_bytes: bytes) -> None:
    recording, errors = logs
    with Connection(port) as conn:
        conn.sock.sendall(request_bytes)
        answer = conn.answer()
        assert answer.status == 500
        assert answer.json() == {"error": "internal error"}
        assert answer.headers["content-type"] == "application/json"
        assert answer.headers.get("connection") != "close"
        conn.sock.sendall(head("GET", "/ok"))  # the same kept-alive connection
        assert conn.answer().json() == {"ok": True}
    assert recording.events("error") == ["http.unhandled_error"]
    assert isinstance(recording.records[0][2]["exc_info"], RuntimeError)
    assert errors.records == []  # logged once: uvicorn never saw the exception


def test_aborted_upload_is_a_debug_line(port: int, seen: Seen, logs: tuple[RecordingLog, Errors]) -> None:
    recording, errors = logs
    for _ in range(20):
        with Connection(port) as conn:
            conn.sock.sendall(post("/robots/x", b"a=" + b"x" * 99_998)[:-90_000])
            time.sleep(0.01)
    deadline = time.monotonic() + 3
    while len(recording.events("debug")) < 20 and time.monotonic() < deadline:
        time.sleep(0.02)
    assert recording.events("debug") == ["http.client_disconnected"] * 20
    assert recording.events("error") == []
    assert errors.records == []


def test_body_read_to_the_end_keeps_alive_and_an_unread_one_closes(port: int) -> None:
    with Connection(port) as conn:
        for _ in range(3):
            conn.sock.sendall(post("/robots/x", b"a[b][]=1&a[b][]=2"))
            answer = conn.answer()
            assert answer.json() == {"fields": 1}
            assert "connection" not in answer.headers
        # /ok never reads the body it was sent: the answer closes rather than leave the body to be drained.
        conn.sock.sendall(head("GET", "/ok", "Content-Length: 5000") + b"x" * 10)
        answer = conn.answer()
        assert answer.status == 200 and answer.headers["connection"] == "close"


def test_path_prefixes() -> None:
    limit = BodyLimit(make_app(), limits={"/install": 10, "/install/page": 20, "/": 30}, default_limit=40)
    paths = ["/install", "/install/x", "/install/page/y", "/installer", "/ok"]
    assert [limit.limit_for(path) for path in paths] == [10, 10, 20, 30, 30]
    assert BodyLimit(make_app(), limits={"/a": 1}, default_limit=40).limit_for("/b") == 40


# --- edges, called in-process -------------------------------------------------------------------------------


async def call(app: ASGIApp, headers: list[tuple[bytes, bytes]] | None = None) -> list[Message]:
    """Run one request with an empty body through ``BodyLimit(app)``; what reached the server."""
    scope = {"type": "http", "method": "POST", "path": "/x", "headers": headers or [(b"content-length", b"0")]}
    sent: list[Message] = []

    async def receive() -> Message:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: Message) -> None:
        sent.append(message)

    await BodyLimit(app)(scope, receive, send)
    return sent


async def test_an_app_that_never_answers_gets_a_json_500(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(bodylimit, "log", recording := RecordingLog())

    async def silent(scope: Scope, receive: Receive, send: Send) -> None:
        pass

    start, body = await call(silent)
    assert start["status"] == 500 and json.loads(body["body"]) == {"error": "internal error"}
    assert recording.events("error") == ["http.no_response"]


async def test_an_own_500_passes_unchanged_and_a_broken_response_is_left_to_the_server() -> None:
    async def own_500(scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": 500, "headers": []})
        await send({"type": "http.response.body", "body": b"mine", "more_body": False})

    assert [message.get("body") for message in await call(own_500)] == [None, b"mine"]

    async def breaks_midway(scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"half", "more_body": True})
        raise RuntimeError("midway")

    # Only the server can close the connection, which tells the client the answer is broken.
    with pytest.raises(RuntimeError, match="midway"):
        await call(breaks_midway)


async def test_an_unreadable_content_length_is_a_400() -> None:
    for value in [b"12, 13", "١٢".encode(), b"9" * 30]:
        start, body = await call(make_app(), [(b"content-length", value)])
        assert start["status"] == 400 and b"Content-Length" in body["body"]
    start, _ = await call(make_app(), [(b"content-length", b"1"), (b"content-length", b"2")])
    assert start["status"] == 400


# --- memory, in a server process of its own -----------------------------------------------------------------

SERVER = """
import socket, sys, uvicorn
from tests.test_bodylimit import make_app
sock = socket.socket(fileno=int(sys.argv[1]))
uvicorn.Server(uvicorn.Config(make_app(), log_level="warning", access_log=False, lifespan="on")).run(sockets=[sock])
"""


def _status_kib(pid: int, key: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    raise KeyError(key)


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="needs /proc")
def test_a_200_mb_body_grows_server_memory_by_less_than_50_mb() -> None:
    sock = free_socket()
    sock.listen(64)
    process = subprocess.Popen(
        [sys.executable, "-c", SERVER, str(sock.fileno())],
        pass_fds=[sock.fileno()],
        cwd=REPO,
        stdout=subprocess.DEVNULL,  # structlog's default output: the middleware's info lines
    )
    try:
        port = sock.getsockname()[1]
        with Connection(port) as conn:  # answered once the server runs; also warms the code paths up
            conn.sock.settimeout(15)
            conn.sock.sendall(post("/robots/x", b"&".join(b"k%d=v" % i for i in range(900))))
            assert conn.answer().json() == {"fields": 900}
        baseline = _status_kib(process.pid, "VmRSS")
        with contextlib.suppress(OSError):  # reset the peak (VmHWM) to the current RSS
            Path(f"/proc/{process.pid}/clear_refs").write_text("5")
        with Connection(port) as conn:  # 200 MB of k=v& pairs, chunked
            conn.sock.sendall(head("POST", "/robots/x", "Transfer-Encoding: chunked"))
            assert conn.stream(chunked(pairs(200 * MIB)), 200 * MIB) < 20 * MIB
            assert conn.answer().status == 413
        with Connection(port) as conn:  # 200 MB of k=v& pairs, declared
            conn.sock.sendall(head("POST", "/robots/x", f"Content-Length: {200 * MIB}"))
            conn.stream(pairs(200 * MIB), 200 * MIB)
            assert conn.answer().status == 413
        with Connection(port) as conn:  # just under the cap: parsed, refused for its field count
            conn.sock.sendall(post("/robots/x", b"k=v&" * (MIB // 4 - 1)))
            assert "more than 1000 fields" in conn.answer().json()["error"]
        grown_mb = (_status_kib(process.pid, "VmHWM") - baseline) / 1024
        assert grown_mb < 50, f"server RSS peak grew by {grown_mb:.1f} MB"
    finally:
        process.terminate()
        process.wait(10)
        sock.close()
