"""Real HTTP servers on loopback for tests: an ASGI app served by uvicorn in a background thread."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any, Protocol, TypeVar
from urllib.parse import parse_qsl

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import ASGIApp


def free_socket() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    return sock


class Stoppable(Protocol):
    def stop(self) -> None: ...


S = TypeVar("S", bound=Stoppable)


def serve(server: S) -> Iterator[S]:
    """The body of a fixture owning one server: ``yield from serve(...)`` yields it and stops it afterwards."""
    try:
        yield server
    finally:
        server.stop()


def serve_many(start: Callable[..., S]) -> Iterator[Callable[..., S]]:
    """The body of a factory fixture: yields ``start``; every server it started is stopped afterwards."""
    started: list[S] = []

    def make(*args: Any, **kwargs: Any) -> S:
        server = start(*args, **kwargs)
        started.append(server)
        return server

    try:
        yield make
    finally:
        for server in started:
            server.stop()


class LiveServer:
    """Serve ``app`` on 127.0.0.1 at a free port until ``stop()``.

    ``options`` go to ``uvicorn.Config``; they are read after ``app_factory`` ran, so the factory may fill them in
    from what it learnt (the settings it built for the port).
    """

    def __init__(self, app_factory: Callable[[int], ASGIApp], options: dict[str, Any] | None = None) -> None:
        self._sock = free_socket()
        self.port: int = self._sock.getsockname()[1]
        self.base_url = f"http://127.0.0.1:{self.port}"
        app = app_factory(self.port)
        config = uvicorn.Config(
            app, **{"log_level": "warning", "access_log": False, "lifespan": "on", **(options or {})}
        )
        self.server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self._sock]}, daemon=True)
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started:
            if time.monotonic() > deadline or not self._thread.is_alive():
                raise RuntimeError("live server did not start")
            time.sleep(0.01)

    def stop(self) -> None:
        self.server.should_exit = True
        self._thread.join(10)
        self._sock.close()


class Receiver(LiveServer):
    """An application's handler endpoint: records every request, answers with a configurable status/delay."""

    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []
        self.status = 200
        self.delay = 0.0
        self._lock = threading.Lock()
        super().__init__(lambda port: self._app())

    def _app(self) -> Starlette:
        async def record(request: Request) -> Response:
            import asyncio

            body = (await request.body()).decode()
            entry = {
                "path": request.url.path,
                "method": request.method,
                "headers": dict(request.headers),
                "query": dict(request.query_params),
                "body": body,
                "form": parse_qsl(body, keep_blank_values=True),
                "at": time.time(),
            }
            with self._lock:
                self.requests.append(entry)
            if self.delay:
                await asyncio.sleep(self.delay)
            return Response("OK", self.status)

        return Starlette(routes=[Route("/{path:path}", record, methods=["GET", "POST"])])

    def url(self, path: str = "/handler") -> str:
        return f"{self.base_url}{path}"

    def wait_for(self, count: int = 1, timeout: float = 10.0, path: str | None = None) -> list[dict[str, Any]]:
        deadline = time.monotonic() + timeout
        while True:
            with self._lock:
                got = [r for r in self.requests if path is None or r["path"] == path]
            if len(got) >= count or time.monotonic() > deadline:
                return got
            time.sleep(0.02)
