"""The sandbox portal as an ASGI application."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from starlette.applications import Starlette
from starlette.routing import BaseRoute, Route
from starlette.types import ASGIApp, Receive, Scope, Send

from . import apps, automation, control, eventbus, methods, oauth
from .config import SandboxConfig
from .methods import crm_requisites
from .rest import rest_endpoint
from .runtime import Sandbox

methods.load_all()


class _TransportCapture:
    """Remember the connection's transport so that fault injection can drop it like a network failure.

    uvicorn hands the application a bound ``receive`` of its request cycle, which holds the transport;
    when that is not available the fault falls back to an aborted response.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            cycle: Any = getattr(receive, "__self__", None)
            scope["sandbox.transport"] = getattr(cycle, "transport", None)
        await self.app(scope, receive, send)


def create_app(config: SandboxConfig | None = None, sandbox: Sandbox | None = None) -> ASGIApp:
    portal = sandbox or Sandbox(config or SandboxConfig())
    eventbus.attach(portal)  # bound events are delivered on every CRM change
    automation.install(portal)  # deal stage changes start robots
    crm_requisites.attach(portal)  # a deleted company's or contact's requisites go with it

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        yield
        await portal.close()

    routes: list[BaseRoute] = [
        Route("/rest/{path:path}", rest_endpoint, methods=["GET", "POST"]),
        *oauth.routes,
        *control.routes,
        # Domain modules contribute their own control endpoints.
        *apps.control_routes,
        *automation.control_routes,
    ]
    app = Starlette(routes=routes, lifespan=lifespan)
    app.state.sandbox = portal
    return _TransportCapture(app)
