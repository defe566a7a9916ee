"""The admin side's HTTP endpoints (the only modules of :mod:`b24bridge.admin` that know FastAPI): the API
(:mod:`.api`), the page (:mod:`.pages`), the offline API documentation (:mod:`.docs`), and who gets in
(:mod:`.door`). :func:`install` adds them all to the app."""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.responses import Response

from . import api, docs, pages
from .door import PageRefused


async def _page_refused(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, PageRefused)
    return exc.response


ROUTERS = (api.router, docs.router, pages.router)


def install(app: FastAPI) -> None:
    """The admin API, page and API documentation on ``app`` (built with ``docs_url=None, redoc_url=None``)."""
    app.include_router(api.router)
    app.include_router(docs.router)
    app.add_exception_handler(PageRefused, _page_refused)
    # Last: the page's catch-all answers unknown /admin paths with an HTML 404.
    app.include_router(pages.router)
