"""One delivery: a source record (with its contact, company and product rows) read, mapped and written to the target,
through the source and target adapters of :mod:`.adapters`.

Between two portals, round trips, each shared with other deliveries through the client's auto-batching: one chain
reading the source deal, its rows, contact, company and (when the route uses the tax number) requisites; the target
lookups (contact and company matches together, and on a repeat the deal by ORIGIN_ID); one chain writing contact,
company, requisite, deal and rows with ``$result[...]`` references (``halt``: nothing is written after a failed
write; see ``writer``). Exactly once in effect: the id map says which target record stands for which source record;
every record b24bridge creates carries ``ORIGINATOR_ID``/``ORIGIN_ID``, so a lost map row, an uncertain write or a
replay finds the record instead of creating another; updates send only the fields that changed.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
from collections.abc import Mapping
from typing import Any

from psycopg_pool import AsyncConnectionPool

from b24bridge.bitrix import BitrixError, CallObserver
from b24bridge.coalesce import Coalescer
from b24bridge.observability import get_logger

from . import repository
from .adapters import Handover, Mapped, SourceAdapter, SourceRecord, TargetAdapter
from .connections import Endpoint
from .dedupe import Dedupe, content_key
from .endpoint_target import EndpointTarget
from .mapping import MappingContext, map_fields, map_products
from .mapping import source_user_ids as user_ids_of
from .portal_target import PortalTarget
from .receivers import Receiver, ReceiverClient, ReceiverError
from .repository import Link, LinkKey
from .route_model import FieldRule, Route
from .schemas import DeliveryResult
from .users import UserDirectory
from .writer import record_id

log = get_logger(__name__)


def modified_at(record: Mapping[str, Any] | None) -> dt.datetime | None:
    text = (record or {}).get("DATE_MODIFY")
    try:
        return dt.datetime.fromisoformat(str(text)) if text else None
    except ValueError:
        return None


def _older_than_delivered(seen: dt.datetime | None, link: Link | None) -> bool:
    """The record as read is older than the state of it last delivered (events may arrive out of order)."""
    if seen is None or link is None or not link.source_modified:
        return False
    return seen < dt.datetime.fromisoformat(link.source_modified)


def _without_echo(
    rules: Mapping[str, FieldRule], deal: Mapping[str, Any], returned: Mapping[str, Any]
) -> dict[str, FieldRule]:
    """The deal's rules minus those copying a field whose value came from the target (status back wrote it): what
    b24bridge itself wrote into the source never travels forward again."""
    return {
        name: rule
        for name, rule in rules.items()
        if not (rule.kind == "copy" and rule.value in returned and deal.get(rule.value) == returned[rule.value])
    }


__all__ = ["Deliverer", "SourceRecord", "modified_at"]


class Deliverer:
    """One delivery, in order: the source adapter reads, the id map says what the target has, the route maps,
    dedupe lets one run through, the target adapter writes (:mod:`.adapters`)."""

    def __init__(
        self, pool: AsyncConnectionPool, users: UserDirectory, dedupe: Dedupe, receivers: ReceiverClient
    ) -> None:
        self.pool = pool
        self.users = users
        self.dedupe = dedupe
        self.receivers = receivers
        # New contacts and companies being created in this process: a second delivery needing the same one waits
        # for its id instead of creating a duplicate.
        self._creating: dict[tuple[str, str, int], asyncio.Future[int]] = {}
        # The deliveries one batch's answer wakes read their links at once: one statement for them all.
        self._links = Coalescer(self._read_links)

    async def read_links(self, wanted: tuple[LinkKey, ...]) -> dict[tuple[str, int], Link]:
        """The links of these records, by (entity, source id), in a statement shared with the deliveries beside."""
        return await self._links(wanted)

    async def _read_links(self, asked: list[tuple[LinkKey, ...]]) -> list[dict[tuple[str, int], Link]]:
        async with self.pool.connection() as conn:
            found = await repository.links_of(conn, [key for keys in asked for key in keys])
        by_key = {(link.source_key, link.target_key, link.entity, link.source_id): link for link in found}
        return [{(key[2], key[3]): by_key[key] for key in keys if key in by_key} for keys in asked]

    def target(self, target: Endpoint | Receiver) -> TargetAdapter:
        """The adapter that writes to ``target``: a portal, or your system's endpoint."""
        if isinstance(target, Receiver):
            return EndpointTarget(self.pool, self.receivers, target)
        return PortalTarget(self.pool, self._creating, target)

    async def deliver(
        self,
        route: Route,
        source: SourceAdapter,
        target: TargetAdapter,
        deal_id: int,
        *,
        run_id: int,
        repeated: bool,
        observer: CallObserver,
        only_stages: tuple[str, ...] | None = None,
    ) -> DeliveryResult:
        found = await source.read(route, deal_id, observer)
        kind, entity = route.source_entity, route.source_entity.entity
        if only_stages is not None and str(found.deal.get(kind.stage_field) or "") not in only_stages:
            note = f"the {kind.name} is not in a stage this route's events take"
            return DeliveryResult(None, None, "skipped", note=note)
        wanted = [(entity, deal_id)]
        if found.contact:
            wanted.append(("CONTACT", record_id(found.contact.get("ID"))))
        if found.company:
            wanted.append(("COMPANY", record_id(found.company.get("ID"))))
        links = await self.read_links(tuple((source.key, target.key, name, record) for name, record in wanted))
        deal_link = links.get((entity, deal_id))
        seen = modified_at(found.deal)
        if _older_than_delivered(seen, deal_link):
            note = f"a newer change of this {kind.name} was delivered already"
            return dataclasses.replace(target.linked(route, deal_link), note=note)
        mapped = await self._map(route, source, target, found, deal_link, observer)
        stage = str(found.deal.get(kind.stage_field) or "")
        content = {"deal": mapped.record, "contact": mapped.contact, "company": mapped.company, "rows": mapped.rows}
        key = content_key(source.key, route.name, deal_id, stage, content)
        held = await self.dedupe.claim(key, run_id)
        if held is not None:
            note = f"the same content was delivered by run {held}"
            return dataclasses.replace(target.linked(route, deal_link), note=note)
        handover = Handover(
            route, source.key, source.view(), source.url(route, deal_id), deal_id, found, mapped, links, run_id,
            repeated, observer,
        )  # fmt: skip
        try:
            return await target.write(handover)
        except (BitrixError, ReceiverError) as exc:
            if not (exc.retryable or exc.uncertain):
                await self.dedupe.release(key, run_id)
            raise

    async def _map(
        self,
        route: Route,
        source: SourceAdapter,
        target: TargetAdapter,
        found: SourceRecord,
        deal_link: Link | None,
        observer: CallObserver,
    ) -> Mapped:
        """The route's rules over what was read (source users matched in the target first, when both are portals)."""
        context = MappingContext(
            deal=found.deal,
            contact=found.contact,
            company=found.company,
            products=found.rows,
            source=source.view(),
            target_portal=target.view(),
            route=route.name,
            entity=route.source_entity.name,
        )
        if source.portal is not None and target.portal is not None:
            user_rules = {**route.deal, **(route.contact.fields if route.contact else {})}
            wanted_users = user_ids_of(user_rules, "deal", context)
            users = await self.users.match(source.portal, target.portal, wanted_users, observer)
            context = dataclasses.replace(context, users=users)
        deal_rules = _without_echo(route.deal, found.deal, deal_link.returned if deal_link else {})
        contact = map_fields(route.contact.fields, "contact", context) if route.contact and found.contact else None
        company = map_fields(route.company.fields, "company", context) if route.company and found.company else None
        rows = map_products(found.rows) if route.products else None
        return Mapped(map_fields(deal_rules, "deal", context), contact, company, rows)
