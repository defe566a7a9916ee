"""Fixtures for the peer suite: real third-party Bitrix24 clients pointed at a live sandbox portal.

The portal is wrapped in a recorder that sees every HTTP request the sandbox receives (method name, status,
User-Agent, time), so tests can count what a client actually sent, not what it claims.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from tests.livehttp import Receiver, serve
from tests.sandbox.conftest import LiveSandbox

# The faithful Bitrix24 cloud request-rate limit (REFERENCE 2.1); the limit tests must use these values.
CLOUD_BURST = 50
CLOUD_DRAIN = 2.0


@dataclass
class Hit:
    """One HTTP request the sandbox answered."""

    path: str
    method: str  # REST method name (lower case, ``.json`` removed); "" for non-REST paths
    status: int
    user_agent: str
    at: float


class Recorder:
    """ASGI middleware that records every request and the status the sandbox answered it with."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.hits: list[Hit] = []
        self._lock = threading.Lock()

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status: list[int] = []

        async def capture(message: Any) -> None:
            if message["type"] == "http.response.start":
                status.append(message["status"])
            await send(message)

        path: str = scope["path"]
        headers = {k.decode().lower(): v.decode() for k, v in scope["headers"]}
        at = time.monotonic()
        try:
            await self.app(scope, receive, capture)
        finally:
            method = ""
            if path.startswith("/rest/"):
                method = path.rstrip("/").rsplit("/", 1)[-1].lower().removesuffix(".json")
            with self._lock:
                self.hits.append(Hit(path, method, status[0] if status else 0, headers.get("user-agent", ""), at))

    def rest(self, method: str | None = None, status: int | None = None, agent: str | None = None) -> list[Hit]:
        """REST requests received, optionally only one method / one status / User-Agents containing ``agent``."""
        with self._lock:
            hits = list(self.hits)
        return [
            h
            for h in hits
            if h.path.startswith("/rest/")
            and (method is None or h.method == method)
            and (status is None or h.status == status)
            and (agent is None or agent.lower() in h.user_agent.lower())
        ]

    def clear(self) -> None:
        with self._lock:
            self.hits.clear()


class PeerSandbox(LiveSandbox):
    """``LiveSandbox`` whose ASGI app is wrapped in a ``Recorder``."""

    def wrap(self, app: Any) -> Any:
        self.recorder = Recorder(app)
        return self.recorder

    @property
    def domain(self) -> str:
        return str(self.info["domain"])

    @property
    def webhook_token(self) -> str:
        """``user_id/code`` of the portal's incoming webhook."""
        return self.webhook_url.split("/rest/", 1)[1].strip("/")

    def fresh(self, **config: Any) -> PeerSandbox:
        """Reset the world and the limits, clear the recorder; limits stay off unless asked for."""
        self.reset(**config)
        self.recorder.clear()
        return self

    def cloud_limits(self) -> None:
        """Switch the faithful cloud request-rate limit on (burst 50, drain 2/s) with an empty bucket."""
        info = self.control("POST", "/_sandbox/config", {"limits_enabled": True, "plan": "cloud"})
        assert info["config"]["burst"] == CLOUD_BURST
        assert info["config"]["drain_per_second"] == CLOUD_DRAIN

    def limits_off(self) -> None:
        self.control("POST", "/_sandbox/config", {"limits_enabled": False})

    def fill_bucket(self) -> None:
        """Another client on the same IP uses up the whole burst (the bucket is per portal and source IP)."""
        for _ in range(CLOUD_BURST):
            assert self.call("user.current").status_code == 200
        assert self.call("user.current").status_code == 503

    def seed_contacts(self, count: int, prefix: str = "Seed") -> list[int]:
        """Create ``count`` contacts with plain HTTP batches (limits off); returns their IDs in order."""
        self.limits_off()
        ids: list[int] = []
        for first in range(0, count, 50):
            cmd = {
                f"c{i}": f"crm.contact.add?fields[NAME]={prefix}{i}&fields[LAST_NAME]=Peer"
                for i in range(first, min(first + 50, count))
            }
            body = self.call("batch", {"halt": 1, "cmd": cmd}).json()
            assert not body["result"]["result_error"], body["result"]["result_error"]
            ids.extend(int(body["result"]["result"][key]) for key in cmd)
        return ids

    def install_app(self, receiver: Receiver) -> dict[str, str]:
        """Register an API-only local app, install it, and return the ``auth[...]`` block of ONAPPINSTALL.

        That event is where a real server-side app first gets its access and refresh tokens (REFERENCE 4.3b).
        """
        created = self.http.post(
            "/_sandbox/apps",
            json={
                "name": "peer",
                "api_only": True,
                "install_url": receiver.url("/install"),
                "redirect_url": receiver.url("/oauth/callback"),
                "scopes": ["crm", "user"],
            },
        )
        assert created.status_code == 201, created.text
        app = created.json()
        installed = self.http.post(f"/_sandbox/apps/{app['client_id']}/install", json={})
        assert installed.status_code == 200, installed.text
        [event] = receiver.wait_for(1, path="/install")
        form = dict(event["form"])
        assert form["event"] == "ONAPPINSTALL", form
        auth = {key[5:-1]: value for key, value in form.items() if key.startswith("auth[")}
        auth["client_id"] = app["client_id"]
        auth["client_secret"] = app["client_secret"]
        return auth

    def contacts(self) -> list[dict[str, Any]]:
        """Every contact the portal holds, read over plain HTTP with limits off (pages of 50)."""
        self.limits_off()
        items: list[dict[str, Any]] = []
        start = 0
        while True:
            body = self.call(
                "crm.contact.list", {"order": {"ID": "ASC"}, "select": ["ID", "NAME"], "start": start}
            ).json()
            assert "result" in body, body
            items.extend(body["result"])
            if "next" not in body:
                return items
            start = body["next"]


class Hammer:
    """Another application on the same server keeping the shared bucket full: requests in a tight loop."""

    def __init__(self, sandbox: PeerSandbox, threads: int = 2) -> None:
        self.sandbox = sandbox
        self.stop_flag = threading.Event()
        self.sent = 0
        self._threads = [threading.Thread(target=self._run, daemon=True) for _ in range(threads)]

    def _run(self) -> None:
        with httpx.Client(timeout=10) as http:
            while not self.stop_flag.is_set():
                http.post(f"{self.sandbox.webhook_url}user.current", json={}, headers={"User-Agent": "hammer"})
                self.sent += 1

    def __enter__(self) -> Hammer:
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop_flag.set()
        for t in self._threads:
            t.join(10)


@pytest.fixture(scope="session")
def _peer_sandbox() -> Iterator[PeerSandbox]:
    yield from serve(PeerSandbox(limits_enabled=False))


@pytest.fixture
def peer(_peer_sandbox: PeerSandbox) -> PeerSandbox:
    """A freshly reset portal (limits off, empty recorder)."""
    return _peer_sandbox.fresh()
