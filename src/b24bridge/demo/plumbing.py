"""What the demo runs on: servers inside its event loop, sandbox portals reached as a user reaches them, waiting."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager
from typing import Any, TypeVar

import httpx
import uvicorn

from b24bridge.bitrix import BitrixClient, Portal, WebhookAuth
from b24bridge.server import PortUnavailable, listening_socket

T = TypeVar("T")
HOST = "127.0.0.1"
# How long the demo waits for what it started (robots registered, workflows answered, runs logged) before it says
# what is missing: far above what a healthy run needs (about a second), far below a user's patience.
PATIENCE = 40.0


class DemoError(Exception):
    """The demo could not run; the message is one line for the operator."""


class SandboxPortal:
    """One sandbox portal as a user reaches it: its control API over HTTP, REST through its incoming webhook (with
    b24bridge's own client, so the demo's calls keep to the portal's limits as b24bridge's do)."""

    def __init__(self, name: str, base_url: str, http: httpx.AsyncClient) -> None:
        self.name, self.base_url, self.http = name, base_url, http
        self.info: dict[str, Any] = {}
        self.rest: Portal | None = None

    async def open(self, bitrix: BitrixClient) -> SandboxPortal:
        self.info = await self.control("GET", "/")
        self.rest = bitrix.portal(WebhookAuth(self.webhook_url))
        return self

    @property
    def webhook_url(self) -> str:
        return str(self.info["webhooks"][0]["url"])

    async def control(self, method: str, path: str, body: Any = None) -> Any:
        answer = await self.http.request(method, f"{self.base_url}/_sandbox{path}", json=body)
        if answer.status_code >= 300:
            raise DemoError(f"{self.name} portal: {method} /_sandbox{path}: {answer.status_code} {answer.text}")
        return answer.json()

    async def call(self, method: str, params: dict[str, Any] | None = None) -> Any:
        assert self.rest is not None, "open() first"
        return await self.rest.call(method, params)

    async def workflow(self, workflow_id: str) -> dict[str, Any]:
        """The workflow once it has ended (answered, failed or timed out)."""

        async def ended() -> dict[str, Any] | None:
            workflow: dict[str, Any] = await self.control("GET", f"/workflows/{workflow_id}")
            return None if workflow["status"] == "running" else workflow

        return await eventually(ended, f"workflow {workflow_id} in the {self.name} portal to be answered")


async def eventually(probe: Callable[[], Awaitable[T | None]], what: str) -> T:
    """``probe()``'s first answer that is not None, asked every 50 ms for at most ``PATIENCE`` seconds."""
    deadline = time.monotonic() + PATIENCE
    while True:
        found = await probe()
        if found is not None:
            return found
        if time.monotonic() > deadline:
            raise DemoError(f"waited {PATIENCE:g}s for {what} (see the log above)")
        await asyncio.sleep(0.05)


def listen(port: int, option: str) -> socket.socket:
    """A loopback socket taken before anything starts, so that a port in use fails at once and touches nothing."""
    try:
        return listening_socket(HOST, port)
    except PortUnavailable as exc:
        raise DemoError(f"{option}: {exc}") from None


class _Server(uvicorn.Server):
    """uvicorn inside the demo's event loop: signals stay with the demo, which stops the servers in order."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


@asynccontextmanager
async def serving(app: Any, sockets: list[socket.socket], what: str, **options: Any) -> AsyncIterator[None]:
    """``app`` served on ``sockets`` in this event loop until the block ends (then shut down, lifespan included)."""
    # log_config=None keeps uvicorn from replacing b24bridge's (redacting) log handlers, as in `serve`.
    config = uvicorn.Config(app, **{"log_level": "warning", "access_log": False, "log_config": None, **options})
    server = _Server(config)
    task = asyncio.get_running_loop().create_task(server.serve(sockets=sockets))
    while not server.started:
        if task.done():
            await task
            raise DemoError(f"{what} did not start (see the log above)")
        await asyncio.sleep(0.02)
    try:
        yield
    finally:
        server.should_exit = True
        await task
