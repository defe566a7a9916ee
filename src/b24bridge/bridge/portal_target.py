"""The target adapter for a portal: contact, company and record matched or created, then one chain that writes them
(:class:`~.writer.TargetWriter`), and the id map rows of what was written."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any

from psycopg_pool import AsyncConnectionPool

from b24bridge.bitrix import Portal

from .adapters import Handover
from .connections import Endpoint
from .repository import Link
from .route_model import Route
from .schemas import DeliveryResult
from .writer import TargetWriter, deal_url


class PortalTarget:
    def __init__(
        self, pool: AsyncConnectionPool, creating: dict[tuple[str, str, int], asyncio.Future[int]], endpoint: Endpoint
    ) -> None:
        self.pool = pool
        # New contacts and companies being created in this process (shared by every delivery of one Deliverer).
        self.creating = creating
        self.endpoint = endpoint

    @property
    def key(self) -> str:
        return self.endpoint.key

    @property
    def portal(self) -> Portal:
        return self.endpoint.portal

    def view(self) -> dict[str, str]:
        return self.endpoint.view()

    def linked(self, route: Route, link: Link | None) -> DeliveryResult:
        if link is None or link.target_id <= 0:
            return DeliveryResult(None, None, "skipped")
        return DeliveryResult(link.target_id, deal_url(self.endpoint, link.target_id, route.target_entity), "skipped")

    async def write(self, handover: Handover) -> DeliveryResult:
        route, found, mapped, repeated = handover.route, handover.found, handover.mapped, handover.repeated
        writer = TargetWriter(
            self.pool,
            self.creating,
            route,
            handover.source_key,
            self.endpoint,
            handover.links,
            handover.observer,
            handover.run_id,
        )
        try:
            # Both lookups at once, so they share the target's next request; the first failure is raised as it is.
            contact_ref, company_ref = await _together(
                writer.party("CONTACT", route.contact, found.contact, mapped.contact, repeated),
                writer.party("COMPANY", route.company, found.company, mapped.company, repeated),
            )
            link = handover.link
            target_id = link.target_id if link is not None else None
            if target_id is None and repeated:
                target_id = await writer.find_origin(route.source_entity.entity, handover.record_id)
            return await writer.deal(
                handover.record_id, target_id, link, mapped.record, mapped.rows, contact_ref, company_ref, found.deal
            )
        except BaseException as exc:
            # Deliveries waiting for a contact or company this one was to create must not wait forever: they fail
            # with the same error (and are retried), whatever broke here.
            await asyncio.shield(writer.abandon(exc))
            raise


async def _together(*jobs: Coroutine[Any, Any, Any]) -> list[Any]:
    """Like ``gather``, but a failure cancels (and waits for) the others before it is raised."""
    tasks = [asyncio.ensure_future(job) for job in jobs]
    try:
        return list(await asyncio.gather(*tasks))
    except BaseException:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        raise
