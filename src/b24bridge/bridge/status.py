"""Status back: when the target's team moves a delivered deal, the source hears of it.

A route's ``status_back`` maps target stages to source stages and computes source fields from the target deal (its
ID and URL, say). Only what changed since the last time is written, so the target's own echo of a forward delivery
changes nothing, and a state older than one already returned is never written over a newer one.
"""

from __future__ import annotations

import dataclasses
import datetime as dt

from psycopg_pool import AsyncConnectionPool

from b24bridge.bitrix import CallObserver

from . import repository
from .connections import Endpoint
from .delivery import modified_at
from .mapping import MappingContext, changed, map_fields, status_back_stage
from .receivers import Receiver
from .route_model import Route
from .schemas import DeliveryResult
from .writer import deal_url


class StatusBackRunner:
    def __init__(self, pool: AsyncConnectionPool) -> None:
        self.pool = pool

    async def run(
        self, route: Route, source: Endpoint, target: Endpoint, target_deal_id: int, observer: CallObserver
    ) -> DeliveryResult:
        assert route.status_back is not None
        mine, theirs = route.source_entity, route.target_entity
        async with self.pool.connection() as conn:
            link = await repository.link_by_target(conn, route.name, target.key, mine.entity, target_deal_id)
        url = deal_url(target, target_deal_id, theirs)
        if link is None or link.source_key != source.key:
            return DeliveryResult(target_deal_id, url, "skipped", note=f"not a {theirs.name} this route delivered")
        deal = theirs.record(await target.portal.call(*theirs.get(target_deal_id), observer=observer))
        seen = modified_at(deal)
        if link.target_modified and seen is not None and seen < dt.datetime.fromisoformat(link.target_modified):
            note = f"a newer state of this {theirs.name} went back already"
            return DeliveryResult(target_deal_id, url, "skipped", note=note)
        values: dict[str, object] = {}
        stage = status_back_stage(route.status_back, str(deal.get(theirs.stage_field) or ""))
        if stage is not None:
            values[mine.stage_field] = stage
        context = MappingContext(
            target={**deal, "url": url}, source=source.view(), target_portal=target.view(), route=route.name
        )
        values |= map_fields(route.status_back.fields, "status_back", context)
        update = changed(values, link.returned)
        if update:
            await source.portal.call(*mine.update(link.source_id, update), observer=observer)
        modified = deal.get("DATE_MODIFY")
        saved = dataclasses.replace(
            link, returned={**link.returned, **values}, target_modified=str(modified) if modified else None
        )
        async with self.pool.connection() as conn:
            await repository.save_links(conn, [saved])
        return DeliveryResult(
            target_deal_id,
            url,
            "updated" if update else "unchanged",
            sorted(update),
            note=f"source {mine.name} {link.source_id}",
        )

    async def from_answer(
        self,
        route: Route,
        source: Endpoint,
        receiver: Receiver,
        source_id: int,
        handed: DeliveryResult,
        observer: CallObserver,
    ) -> None:
        """An endpoint's answer back into the source record: ``status_back.fields`` computed from it (``target.ID``
        is the id it gave), only what changed since the last answer written."""
        assert route.status_back is not None
        mine = route.source_entity
        async with self.pool.connection() as conn:
            links = await repository.links(conn, source.key, receiver.key, [(mine.entity, source_id)])
        link = links.get((mine.entity, source_id))
        if link is None:
            return
        target = {**(handed.answer or {}), "ID": handed.target_ref, "id": handed.target_ref}
        context = MappingContext(target=target, source=source.view(), target_portal=receiver.view(), route=route.name)
        values = map_fields(route.status_back.fields, "status_back", context)
        update = changed(values, link.returned)
        if not update:
            return
        await source.portal.call(*mine.update(source_id, update), observer=observer)
        async with self.pool.connection() as conn:
            await repository.save_links(conn, [dataclasses.replace(link, returned={**link.returned, **values})])
