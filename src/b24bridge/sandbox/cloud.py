"""Several sandbox portals side by side in one process, sharing one OAuth server, like the Bitrix24 cloud.

On the real cloud every portal has its own domain and member_id, and one OAuth server (oauth.bitrix.info) serves them
all: a refresh token or an authorization code belongs to one portal, and the token answer names that portal
(member_id, domain, client_endpoint), whichever portal's application asked. Here each portal is a ``Sandbox`` on its
own loopback port (its own domain ``127.0.0.1:PORT``), with its own world, webhook, limits, faults, clock and control
API; every portal's ``/oauth/token/`` and ``/oauth/rest/`` resolve tokens and codes across the whole cloud (each
portal's ``cloud`` is the list of them all), so any port answers for any portal.

One server serves all the ports: a request is routed to the portal that owns the local port it arrived on.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path

from starlette.types import ASGIApp, Receive, Scope, Send

from .app import create_app
from .config import SandboxConfig
from .runtime import Sandbox


def portal_state_path(path: Path | None, index: int) -> Path | None:
    """``--state world.json`` with several portals: portal 1 uses ``world.json``, portal 2 ``world.2.json``..."""
    if path is None or index == 0:
        return path
    return path.with_name(f"{path.stem}.{index + 1}{path.suffix}")


class Cloud:
    """The portals of one cloud: each knows the others through ``Sandbox.cloud`` (the same list, itself included)."""

    def __init__(self, portals: Sequence[Sandbox]) -> None:
        if not portals:
            raise ValueError("a cloud needs at least one portal")
        self.portals = list(portals)
        for portal in self.portals:
            portal.cloud = self.portals

    @classmethod
    def on_ports(cls, config: SandboxConfig, count: int) -> Cloud:
        """``count`` portals on ports ``config.port`` .. ``config.port + count - 1``, otherwise configured alike."""
        if count < 1:
            raise ValueError("portals must be at least 1")
        return cls(
            [
                Sandbox(
                    dataclasses.replace(
                        config,
                        port=config.port + index,
                        state_path=portal_state_path(config.state_path, index),
                        method_costs=dict(config.method_costs),
                    )
                )
                for index in range(count)
            ]
        )

    def asgi(self) -> ASGIApp:
        """One ASGI application for every port of the cloud."""
        return PortRouter({portal.config.port: create_app(sandbox=portal) for portal in self.portals}, self.portals)


class PortRouter:
    """Send each HTTP request to the portal that owns the local port it arrived on; close every portal at shutdown.

    The portals' own lifespans are not run: the router's lifespan stands for them all.
    """

    def __init__(self, apps: dict[int, ASGIApp], portals: list[Sandbox]) -> None:
        self.apps = apps
        self.portals = portals
        self.first = next(iter(apps.values()))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        server = scope.get("server")
        app = self.apps.get(server[1], self.first) if server else self.first
        await app(scope, receive, send)

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                for portal in self.portals:
                    await portal.close()
                await send({"type": "lifespan.shutdown.complete"})
                return
