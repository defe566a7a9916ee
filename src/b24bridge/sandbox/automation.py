"""Placeholder until this module lands."""

from __future__ import annotations

from starlette.routing import BaseRoute

control_routes: list[BaseRoute] = []
