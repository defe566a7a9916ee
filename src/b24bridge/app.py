"""The FastAPI application: health, readiness and metrics; domain routers are added by later modules."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import APIRouter, FastAPI
from fastapi.responses import JSONResponse
from starlette.routing import Route

from b24bridge import __version__
from b24bridge.context import Context, open_context
from b24bridge.db import Database, DatabaseUnavailable
from b24bridge.observability import get_logger, metrics_app, redact_text
from b24bridge.settings import Settings

log = get_logger(__name__)


def create_app(settings: Settings, database: Database | None = None) -> FastAPI:
    """Build the app.

    Without ``database`` the lifespan owns one: it starts it (the embedded PostgreSQL if no URL is
    configured), applies migrations and stops it on shutdown.  A passed-in database is used as is and
    left running, so tests and embedding callers keep control of its life.
    """

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with open_context(settings, database) as context:
            app.state.database = context.database
            app.state.context = context
            worker = _start_worker(context) if settings.worker_in_process else None
            log.info("b24bridge ready to serve", embedded_database=context.database.embedded)
            try:
                yield
            finally:
                if worker is not None:
                    worker.cancel()
                    await asyncio.gather(worker, return_exceptions=True)

    app = FastAPI(title="b24bridge", version=__version__, lifespan=lifespan)
    app.state.settings = settings
    # Set eagerly so an app wrapped around a caller's database works even where no lifespan runs
    # (httpx's ASGITransport in tests).
    app.state.database = database

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        # Liveness only: the process is up and the event loop answers. Dependencies belong to /readyz.
        return {"status": "ok"}

    @app.get("/readyz")
    async def readyz() -> JSONResponse:
        db: Database | None = getattr(app.state, "database", None)
        if db is None:
            return JSONResponse({"status": "unavailable", "reason": "database not started"}, status_code=503)
        try:
            await db.ping()
        except DatabaseUnavailable as exc:
            return JSONResponse(
                {"status": "unavailable", "reason": redact_text(str(exc))},
                status_code=503,
            )
        except Exception as exc:  # a readiness probe reports, it never crashes
            reason = redact_text(f"{type(exc).__name__}: {exc}")
            return JSONResponse({"status": "unavailable", "reason": reason}, status_code=503)
        return JSONResponse({"status": "ready"})

    for router in _domain_routers():
        app.include_router(router)

    # A plain route (not a Mount) so that ``/metrics`` answers without a redirect to ``/metrics/``.
    app.router.routes.append(Route("/metrics", endpoint=metrics_app(), include_in_schema=False))
    return app


def _domain_routers() -> list[APIRouter]:
    from b24bridge.portals.endpoints import router as portals
    from b24bridge.robots.endpoints import router as robots

    return [portals, robots]


def _start_worker(context: Context) -> asyncio.Task[None]:
    """The in-process job worker of ``serve``; ``b24bridge worker`` runs the same worker on its own."""
    worker = context.jobs.run_worker_async(
        concurrency=context.settings.worker_concurrency, install_signal_handlers=False, name="serve"
    )
    return asyncio.get_running_loop().create_task(worker)
