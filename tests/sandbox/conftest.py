"""A real sandbox portal on loopback for the conformance suite."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
import uvicorn

from b24bridge.sandbox.app import create_app
from b24bridge.sandbox.cloud import Cloud
from b24bridge.sandbox.config import SandboxConfig
from b24bridge.sandbox.runtime import Sandbox
from tests.livehttp import LiveServer, free_socket, serve, serve_many


class PortalClient:
    """HTTP access to one live sandbox portal: REST through its incoming webhook, and its control API."""

    portal: Sandbox  # the in-process portal, for the few checks that need it

    def __init__(self, base_url: str, config_overrides: dict[str, Any]) -> None:
        self.config_overrides = config_overrides
        self.http = httpx.Client(base_url=base_url, timeout=30)
        self.refresh_info()

    def refresh_info(self) -> dict[str, Any]:
        info: dict[str, Any] = self.control("GET", "/_sandbox/")
        self.info = info
        self.webhook_url: str = self.info["webhooks"][0]["url"]
        app = self.info["apps"][0]
        self.client_id: str = app["client_id"]
        self.client_secret: str = app["client_secret"]
        return info

    def control(self, method: str, path: str, json: Any = None) -> Any:
        response = self.http.request(method, path, json=json)
        assert response.status_code < 300, f"{method} {path}: {response.status_code} {response.text}"
        return response.json()

    def reset(self, **config: Any) -> None:
        self.control("POST", "/_sandbox/reset")
        self.control("DELETE", "/_sandbox/faults")
        settings = {"limits_enabled": False, **self.config_overrides, **config}
        self.control("POST", "/_sandbox/config", {k: v for k, v in settings.items() if k in _RUNTIME_KEYS})
        self.refresh_info()

    def call(self, method: str, params: dict[str, Any] | None = None, **kw: Any) -> httpx.Response:
        """A REST call through the portal's incoming webhook, JSON body."""
        return self.http.post(f"{self.webhook_url}{method}", json=params or {}, **kw)


class LiveSandbox(PortalClient, LiveServer):
    """A sandbox served by uvicorn; tests talk to it only over HTTP (REST and the control API)."""

    def __init__(self, **config: Any) -> None:
        def factory(port: int) -> Any:
            self.portal = Sandbox(SandboxConfig(port=port, **config))
            self.portal.bootstrap()
            return self.wrap(create_app(sandbox=self.portal))

        LiveServer.__init__(self, factory)
        PortalClient.__init__(self, self.base_url, config)

    def wrap(self, app: Any) -> Any:
        """The ASGI app to serve in place of the sandbox's own (subclasses may wrap it)."""
        return app

    def stop(self) -> None:
        self.http.close()
        super().stop()


class CloudPortal(PortalClient):
    """One portal of a ``LiveCloud``: the same access as a ``LiveSandbox`` (``base_url``, ``call``, ``control``...)."""

    def __init__(self, portal: Sandbox, config_overrides: dict[str, Any]) -> None:
        self.portal = portal
        self.port = portal.config.port
        self.base_url = portal.config.base_url
        super().__init__(self.base_url, config_overrides)


class LiveCloud:
    """``count`` portals sharing one OAuth server, served by one uvicorn server with a loopback socket per portal.

    Built like ``b24bridge sandbox --portals N`` (``Cloud.asgi``); ``LiveServer`` serves one socket only, hence the
    server thread here. Iterating gives the portals: ``source, target = cloud_factory(2)``.
    """

    def __init__(self, count: int, **config: Any) -> None:
        self._sockets = [free_socket() for _ in range(count)]
        ports = [sock.getsockname()[1] for sock in self._sockets]
        self.cloud = Cloud([Sandbox(SandboxConfig(port=port, **config)) for port in ports])
        for portal in self.cloud.portals:
            portal.bootstrap()
        self.server = uvicorn.Server(uvicorn.Config(self.cloud.asgi(), log_level="warning", lifespan="on"))
        self._thread = threading.Thread(target=self.server.run, kwargs={"sockets": self._sockets}, daemon=True)
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started:
            if time.monotonic() > deadline or not self._thread.is_alive():
                raise RuntimeError("live cloud did not start")
            time.sleep(0.01)
        self.portals = [CloudPortal(portal, config) for portal in self.cloud.portals]

    def __iter__(self) -> Iterator[CloudPortal]:
        return iter(self.portals)

    def __getitem__(self, index: int) -> CloudPortal:
        return self.portals[index]

    def __len__(self) -> int:
        return len(self.portals)

    def marketplace_app(self, **fields: Any) -> dict[str, Any]:
        """A marketplace application (one client_id and secret) registered in every portal, installed in none."""
        first, *others = self.portals
        app: dict[str, Any] = first.control("POST", "/_sandbox/apps", {"name": "Bridge", "marketplace": True, **fields})
        for portal in others:
            portal.control("POST", f"/_sandbox/apps/{app['client_id']}/register")
        return app

    def stop(self) -> None:
        for portal in self.portals:
            portal.http.close()
        self.server.should_exit = True
        self._thread.join(10)
        for sock in self._sockets:
            sock.close()


_RUNTIME_KEYS = {
    "limits_enabled",
    "plan",
    "burst",
    "drain_per_second",
    "operating_limit",
    "operating_window",
    "method_costs",
    "access_token_ttl",
    "auth_code_ttl",
    "refresh_token_ttl",
    "handler_timeout",
}


@pytest.fixture(scope="session")
def _shared_sandbox() -> Iterator[LiveSandbox]:
    yield from serve(LiveSandbox(limits_enabled=False))


@pytest.fixture
def sandbox(_shared_sandbox: LiveSandbox) -> LiveSandbox:
    """A freshly reset portal with limits off (each test that needs limits turns them on)."""
    _shared_sandbox.reset()
    return _shared_sandbox


@pytest.fixture
def sandbox_factory() -> Iterator[Callable[..., LiveSandbox]]:
    yield from serve_many(LiveSandbox)


@pytest.fixture
def cloud_factory() -> Iterator[Callable[..., LiveCloud]]:
    """``cloud_factory(n, **config)``: n live portals sharing one OAuth server (limits off unless configured)."""

    def start(count: int = 2, **config: Any) -> LiveCloud:
        return LiveCloud(count, **{"limits_enabled": False, **config})

    yield from serve_many(start)
