"""A real sandbox portal on loopback for the conformance suite."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

from b24bridge.sandbox.app import create_app
from b24bridge.sandbox.config import SandboxConfig
from b24bridge.sandbox.runtime import Sandbox
from tests.livehttp import LiveServer, serve, serve_many


class LiveSandbox(LiveServer):
    """A sandbox served by uvicorn; tests talk to it only over HTTP (REST and the control API)."""

    def __init__(self, **config: Any) -> None:
        self.config_overrides = config

        def factory(port: int) -> Any:
            self.portal = Sandbox(SandboxConfig(port=port, **config))
            self.portal.bootstrap()
            return self.wrap(create_app(sandbox=self.portal))

        super().__init__(factory)
        self.http = httpx.Client(base_url=self.base_url, timeout=30)
        self.refresh_info()

    def wrap(self, app: Any) -> Any:
        """The ASGI app to serve in place of the sandbox's own (subclasses may wrap it)."""
        return app

    def refresh_info(self) -> dict[str, Any]:
        self.info = self.control("GET", "/_sandbox/")
        self.webhook_url: str = self.info["webhooks"][0]["url"]
        app = self.info["apps"][0]
        self.client_id: str = app["client_id"]
        self.client_secret: str = app["client_secret"]
        return self.info

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

    def stop(self) -> None:
        self.http.close()
        super().stop()


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
