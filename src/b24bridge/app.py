"""The FastAPI application: the domain routers, health, readiness and metrics; the in-process worker of ``serve``."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import psycopg
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from fastapi.routing import APIRoute
from psycopg_pool import PoolTimeout
from starlette.exceptions import HTTPException
from starlette.routing import Match, Route

from b24bridge import __version__, gauges
from b24bridge.accesslog import AccessLog
from b24bridge.admin.endpoints import ROUTERS as ADMIN_ROUTERS
from b24bridge.admin.endpoints import install as install_admin
from b24bridge.apidoc import SERVED_RAW
from b24bridge.bodylimit import ASGIApp, BodyLimit, Message, Receive, Scope, Send
from b24bridge.bridge.endpoints import router as bridge_router
from b24bridge.composition import open_services
from b24bridge.db import Database, DatabaseUnavailable
from b24bridge.forms import FormError
from b24bridge.jobs import SupervisedWorker
from b24bridge.observability import get_logger, metrics_app, redact_text
from b24bridge.portals.endpoints import router as portals_router
from b24bridge.robots.endpoints import router as robots_router
from b24bridge.safetext import refusal
from b24bridge.server import settle_heap
from b24bridge.settings import Settings

log = get_logger(__name__)

DOMAIN_ROUTERS = (portals_router, robots_router, bridge_router)
ROUTERS = (*DOMAIN_ROUTERS, *ADMIN_ROUTERS)


def create_service(settings: Settings, database: Database | None = None) -> ASGIApp:
    """What ``serve`` runs and the tests serve: the app behind the door (body caps, read deadline, JSON 500s).

    The door is outermost so that nothing, Starlette's own error handling included, runs before a body over its
    cap is refused, and so that its JSON 500 replaces Starlette's plain-text one (docs/security.md).
    """
    app = create_app(settings, database)
    raw = RawRoutes(app, _raw_routes())
    door = BodyLimit(raw, read_timeout=settings.body_read_timeout, path_parameter=_path_parameter_of(app))
    return AccessLog(Liveness(door))


_ALIVE_HEAD: Message = {
    "type": "http.response.start",
    "status": 200,
    "headers": [(b"content-type", b"application/json"), (b"content-length", b"15")],
}
_ALIVE_BODY: Message = {"type": "http.response.body", "body": b'{"status":"ok"}', "more_body": False}


class Liveness:
    """``GET /healthz`` answered before the framework: liveness says only that the process and its event loop
    answer, and an orchestrator asks often, so it should cost what the server costs and no more (the FastAPI route
    of the same path documents it in the OpenAPI schema). Logged and counted like every request."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"] == "/healthz" and scope["method"] == "GET":
            scope["b24bridge.route"] = "/healthz"
            await send(dict(_ALIVE_HEAD))
            await send(dict(_ALIVE_BODY))
            return
        await self.app(scope, receive, send)


def _path_parameter_of(app: FastAPI) -> Callable[[Scope], str | None]:
    """For the door's refusals: which path parameter of the route ``scope`` is for holds text that is not storable
    (a NUL; U+FFFD is what the server made of bytes that are not UTF-8)."""
    routes = [*app.routes, *(route for router in ROUTERS for route in router.routes)]
    templates = [route.path_regex for route in routes if isinstance(route, Route)]

    def name(scope: Scope) -> str | None:
        path = str(scope["path"])
        for template in templates:
            matched = template.match(path)
            if matched is None:
                continue
            for key, value in matched.groupdict().items():
                if refusal(value) is not None or "\ufffd" in value:
                    return key
        return None

    return name


def create_app(settings: Settings, database: Database | None = None) -> FastAPI:
    """Build the app.

    Without ``database`` the lifespan owns one: it starts it (the embedded PostgreSQL if no URL is
    configured), applies migrations and stops it on shutdown.  A passed-in database is used as is and
    left running, so tests and embedding callers keep control of its life.
    """

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[dict[str, Any]]:
        async with open_services(settings, database) as services:
            app.state.database = services.database
            worker: SupervisedWorker | None = None
            task: asyncio.Task[None] | None = None
            if settings.worker_in_process:
                worker = services.worker("serve")
                task = asyncio.get_running_loop().create_task(worker.run())
            app.state.worker = worker
            sampler = asyncio.get_running_loop().create_task(gauges.sample_forever(services.database.pool))
            door = asyncio.get_running_loop().create_task(services.run_door())
            settle_heap()
            log.info("b24bridge ready to serve", embedded_database=services.database.embedded)
            try:
                yield services.web_state()
            finally:
                running = [t for t in (task, sampler, door) if t is not None]
                for background in running:
                    background.cancel()
                await asyncio.gather(*running, return_exceptions=True)

    # /docs and /redoc are the admin side's: their assets are served locally, so they work without the Internet.
    app = FastAPI(title="b24bridge", version=__version__, lifespan=lifespan, docs_url=None, redoc_url=None)
    # Set eagerly so an app wrapped around a caller's database answers /readyz even where no lifespan runs
    # (httpx's ASGITransport in tests).
    app.state.database = database
    app.state.worker = None

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        # Liveness only: the process is up and the event loop answers. Dependencies belong to /readyz. Served by
        # :class:`Liveness` in front of the app; this route documents it (and answers where the app runs alone).
        return {"status": "ok"}

    @app.get("/readyz")
    async def readyz() -> JSONResponse:
        return await _readiness(app.state.database, app.state.worker)

    @app.exception_handler(psycopg.OperationalError)
    @app.exception_handler(PoolTimeout)
    async def database_down(request: Request, exc: Exception) -> JSONResponse:
        return _database_down(request, exc)

    # Every 4xx is a JSON error naming what was wrong (docs/security.md), the framework's own ones included.
    @app.exception_handler(FormError)
    async def form_refused(request: Request, exc: FormError) -> JSONResponse:
        log.info("request refused: malformed form", path=request.url.path, field=exc.field, status=exc.status)
        return JSONResponse(exc.payload(), status_code=exc.status)

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> JSONResponse:
        return JSONResponse({"error": str(exc.detail)}, status_code=exc.status_code, headers=exc.headers)

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, exc: RequestValidationError) -> JSONResponse:
        [first, *_] = exc.errors() or [{"loc": ("request",), "msg": "invalid"}]
        field = ".".join(str(part) for part in first["loc"][1:]) or str(first["loc"][0])
        return JSONResponse({"error": f"field {field}: {first['msg']}", "field": field}, status_code=400)

    for router in DOMAIN_ROUTERS:
        app.include_router(router)
    install_admin(app)
    # A plain route (not a Mount) so that ``/metrics`` answers without a redirect to ``/metrics/``.
    app.router.routes.append(Route("/metrics", endpoint=metrics_app(), include_in_schema=False))
    return app


def _raw_routes() -> list[Route]:
    """The door's raw handlers (:func:`b24bridge.apidoc.served_raw`) as plain Starlette routes."""
    return [
        Route(route.path, _answering_refusals(route.endpoint), methods=sorted(route.methods or ()))
        for router in DOMAIN_ROUTERS
        for route in router.routes
        if isinstance(route, APIRoute) and getattr(route.endpoint, SERVED_RAW, False)
    ]


def _answering_refusals(endpoint: Callable[[Request], Awaitable[Response]]) -> Callable[[Request], Awaitable[Response]]:
    """What the app's exception handlers do for its own routes, for a raw one: a malformed form is its JSON 4xx,
    a database that is away a 503 (the intakes spool rather than raise; this is for anything else)."""

    async def answer(request: Request) -> Response:
        try:
            return await endpoint(request)
        except FormError as exc:
            log.info("request refused: malformed form", path=request.url.path, field=exc.field, status=exc.status)
            return JSONResponse(exc.payload(), status_code=exc.status)
        except (psycopg.OperationalError, PoolTimeout) as exc:
            return _database_down(request, exc)

    return answer


class RawRoutes:
    """The raw handlers ahead of the app: a request for one of them is served by its plain route and nothing else
    (no FastAPI middleware, no dependency solving); every other request goes to the app, whose routes of the same
    paths document the raw ones in the OpenAPI schema."""

    def __init__(self, app: ASGIApp, routes: list[Route]) -> None:
        self.app = app
        self.routes = routes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            for route in self.routes:
                matched, child = route.matches(scope)
                if matched is Match.FULL:
                    scope.update(child)
                    scope["route"] = route  # what FastAPI's router sets: the access log labels by its template
                    await route.handle(scope, receive, send)
                    return
        await self.app(scope, receive, send)


def _database_down(request: Request, exc: Exception) -> JSONResponse:
    # A write was not stored: say so plainly (a portal does not retry a robot call; a 503 is all we can give).
    # A read says only that it could not be answered; both invite a retry shortly.
    log.warning("request refused: database unavailable", path=request.url.path, error=type(exc).__name__)
    writes = request.method not in ("GET", "HEAD", "OPTIONS")
    error = "the database is unavailable; nothing was stored" if writes else "the database is unavailable"
    return JSONResponse({"error": error}, status_code=503, headers={"Retry-After": "5"})


async def _readiness(database: Database | None, worker: SupervisedWorker | None) -> JSONResponse:
    if database is None:
        return _unavailable("database not started")
    try:
        await database.ping()
    except DatabaseUnavailable as exc:
        return _unavailable(redact_text(str(exc)))
    except Exception as exc:  # a readiness probe reports, it never crashes
        return _unavailable(redact_text(f"{type(exc).__name__}: {exc}"))
    problem = worker.health() if worker is not None else None
    if problem is not None:
        return _unavailable(problem)
    return JSONResponse({"status": "ready"})


def _unavailable(reason: str) -> JSONResponse:
    return JSONResponse({"status": "unavailable", "reason": reason}, status_code=503)
