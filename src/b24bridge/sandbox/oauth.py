"""The Bitrix24 OAuth server (``/oauth/authorize/``, ``/oauth/token/``)."""

from __future__ import annotations

from starlette.routing import BaseRoute

routes: list[BaseRoute] = []
