"""The control API under ``/_sandbox/``: not part of the Bitrix24 surface."""

from __future__ import annotations

from starlette.routing import BaseRoute

routes: list[BaseRoute] = []
