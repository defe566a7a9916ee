"""The admin page's HTML: Jinja2 templates (``templates/``) rendered to text, and the static files it serves.

No web framework here: :mod:`.endpoints` turns what these functions return into responses. Every value is escaped
(autoescape), and the pages load scripts and styles only from this service (``static/``), so they work offline and
under a strict Content-Security-Policy.
"""

from __future__ import annotations

import datetime as dt
import json
from importlib import resources
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape

from b24bridge import __version__
from b24bridge.runs.schemas import FINAL, KINDS, STATUSES

STATIC_FILES = {
    "admin.css": "text/css; charset=utf-8",
    "htmx.min.js": "text/javascript; charset=utf-8",
}
# The Swagger UI and ReDoc assets of /docs and /redoc, shipped by the fastapi-offline package (so no CDN is needed).
DOC_ASSETS = {
    "swagger-ui-bundle.js": "text/javascript; charset=utf-8",
    "swagger-ui.css": "text/css; charset=utf-8",
    "redoc.standalone.js": "text/javascript; charset=utf-8",
    "favicon.png": "image/png",
}
# What admin pages may load and do: only this service's own scripts and styles, no frames, forms only to itself.
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; object-src 'none'; "
    "base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)


def static_path(name: str) -> Path:
    return Path(str(resources.files("b24bridge.admin") / "static" / name))


def doc_asset_path(name: str) -> Path:
    return Path(str(resources.files("fastapi_offline") / "static" / name))


def _timestamp(value: dt.datetime | None) -> str:
    return value.astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M:%S") if value is not None else ""


def _took(start: dt.datetime | None, end: dt.datetime | None) -> str:
    if start is None or end is None:
        return ""
    seconds = (end - start).total_seconds()
    return f"{seconds * 1000:.0f} ms" if seconds < 10 else f"{seconds:.1f} s"


def _pretty(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, indent=2, sort_keys=True, default=str)


def query(**values: Any) -> str:
    """A query string of the values that are set (lists repeat their key)."""
    pairs = [(key, item) for key, value in values.items() for item in (value if isinstance(value, list) else [value])]
    return urlencode([(key, str(item)) for key, item in pairs if item not in (None, "")])


def _environment() -> Environment:
    env = Environment(
        loader=PackageLoader("b24bridge.admin", "templates"),
        autoescape=select_autoescape(["html"]),
        undefined=StrictUndefined,  # a misspelt name is an error in the tests, not an empty cell in production
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters.update(ts=_timestamp, pretty=_pretty)
    env.globals.update(
        took=_took,
        query=query,
        version=__version__,
        statuses=STATUSES,
        kinds=KINDS,
        final=FINAL,
        static=lambda name: f"/admin/static/{name}?v={__version__}",
    )
    return env


_ENV = _environment()


def render(template: str, **context: Any) -> str:
    return _ENV.get_template(template).render(**context)
