"""Smart processes a route file names by title (``target_entity: {smart_process: Orders}``), resolved to their
``entityTypeId`` through ``crm.type.list`` of the portal that has them, when a run needs them.

Route files are read without calling any portal (a portal may not have installed b24bridge yet), and a process's
``entityTypeId`` differs from portal to portal, so the title is what a route can say ahead of time.
"""

from __future__ import annotations

import dataclasses
import time

from b24bridge.bitrix import Portal

from .entities import RecordKind, process_titled, process_titles, smart_process
from .route_model import Route
from .schemas import BridgeConfigError

RESOLVED_FOR = 300.0  # seconds a title's entityTypeId is trusted before crm.type.list is asked again


class ProcessTypes:
    def __init__(self, ttl: float = RESOLVED_FOR) -> None:
        self.ttl = ttl
        self._known: dict[tuple[str, str], tuple[float, int]] = {}

    async def kind(self, portal_key: str, portal: Portal, kind: RecordKind) -> RecordKind:
        """``kind`` with its ``entityTypeId`` (itself when it has one)."""
        if not kind.is_item or kind.entity_type_id:
            return kind
        key = (portal_key, kind.process.casefold())
        known = self._known.get(key)
        if known is None or known[0] < time.monotonic():
            titles = process_titles([row async for row in portal.list("crm.type.list", {})])
            entity_type_id = process_titled(titles, kind.process)
            if entity_type_id is None:
                has = ", ".join(sorted(titles.values())) or "none"
                raise BridgeConfigError(f"no smart process titled {kind.process!r} in the portal (it has: {has})")
            known = (time.monotonic() + self.ttl, entity_type_id)
            self._known[key] = known
        return smart_process(known[1], kind.process)

    async def route(
        self,
        route: Route,
        source: tuple[str, Portal] | None,
        target: tuple[str, Portal] | None,
    ) -> Route:
        """The route with both its entities resolved (each end by its own portal)."""
        mine = route.source_entity if source is None else await self.kind(*source, route.source_entity)
        theirs = route.target_entity if target is None else await self.kind(*target, route.target_entity)
        if mine is route.source_entity and theirs is route.target_entity:
            return route
        return dataclasses.replace(route, source_entity=mine, target_entity=theirs)
