"""One delivery: a source deal (with its contact, company and product rows) read, mapped and written to the target.

Round trips, each shared with other deliveries through the client's auto-batching: one chain reading the source
deal, its rows, contact, company and (when the route uses the tax number) requisites; the target lookups (contact
and company matches together, and on a repeat the deal by ORIGIN_ID); one chain writing contact, company,
requisite, deal and rows with ``$result[...]`` references (``halt``: nothing is written after a failed write; see
``writer``). Exactly once in effect: the id map says which target record stands for which source record; every
record b24bridge creates carries ``ORIGINATOR_ID``/``ORIGIN_ID``, so a lost map row, an uncertain write or a replay
finds the record instead of creating another; updates send only the fields that changed.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
from collections.abc import Coroutine, Mapping
from dataclasses import dataclass
from typing import Any

from psycopg_pool import AsyncConnectionPool

from b24bridge.bitrix import BitrixError, CallObserver, CommandResult
from b24bridge.observability import get_logger

from . import repository
from .connections import Endpoint, Source
from .dedupe import Dedupe, content_key
from .handover import EndpointTarget, Mapped
from .mapping import MappingContext, map_fields, map_products, reads_tax_number
from .mapping import source_user_ids as user_ids_of
from .receivers import Receiver, ReceiverError
from .repository import Link
from .route_model import TAX_NUMBER, FieldRule, Route
from .schemas import DeliveryResult
from .users import UserDirectory
from .writer import TargetWriter, deal_url, record_id

log = get_logger(__name__)


def modified_at(record: Mapping[str, Any] | None) -> dt.datetime | None:
    text = (record or {}).get("DATE_MODIFY")
    try:
        return dt.datetime.fromisoformat(str(text)) if text else None
    except ValueError:
        return None


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


@dataclass
class SourceRecord:
    """What a delivery starts from: the source record (read from the portal, or POSTed), its contact, company and
    product rows."""

    deal: dict[str, Any]
    contact: dict[str, Any] | None
    company: dict[str, Any] | None
    rows: list[dict[str, Any]]


class Deliverer:
    def __init__(
        self, pool: AsyncConnectionPool, users: UserDirectory, dedupe: Dedupe, endpoints: EndpointTarget
    ) -> None:
        self.pool = pool
        self.users = users
        self.dedupe = dedupe
        self.endpoints = endpoints
        # New contacts and companies being created in this process: a second delivery needing the same one waits
        # for its id instead of creating a duplicate.
        self._creating: dict[tuple[str, str, int], asyncio.Future[int]] = {}

    async def deliver(
        self,
        route: Route,
        source: Source,
        target: Endpoint | Receiver,
        deal_id: int,
        *,
        run_id: int,
        repeated: bool,
        observer: CallObserver,
        only_stages: tuple[str, ...] | None = None,
        given: SourceRecord | None = None,
    ) -> DeliveryResult:
        """Deliver source record ``deal_id``: read from the source portal, or ``given`` (an inbound POST's)."""
        if given is not None:
            found = given
        else:
            assert isinstance(source, Endpoint)
            found = await self._read_source(route, source, deal_id, observer)
        kind, entity = route.source_entity, route.source_entity.entity
        if only_stages is not None and str(found.deal.get(kind.stage_field) or "") not in only_stages:
            note = f"the {kind.name} is not in a stage this route's events take"
            return DeliveryResult(None, None, "skipped", note=note)
        async with self.pool.connection() as conn:
            wanted = [(entity, deal_id)]
            if found.contact:
                wanted.append(("CONTACT", record_id(found.contact.get("ID"))))
            if found.company:
                wanted.append(("COMPANY", record_id(found.company.get("ID"))))
            links = await repository.links(conn, source.key, target.key, wanted)
        deal_link = links.get((entity, deal_id))
        seen = modified_at(found.deal)
        if deal_link is not None and deal_link.source_modified and seen is not None:
            last = dt.datetime.fromisoformat(deal_link.source_modified)
            if seen < last:
                return DeliveryResult(
                    *_target_of(deal_link, target, route),
                    "skipped",
                    note=f"a newer change of this {kind.name} was delivered already",
                    target_ref=deal_link.target_ref,
                )
        user_rules = {**route.deal, **(route.contact.fields if route.contact else {})}
        context = MappingContext(
            deal=found.deal,
            contact=found.contact,
            company=found.company,
            products=found.rows,
            source=source.view(),
            target_portal=target.view(),
            route=route.name,
            entity=kind.name,
        )
        if isinstance(source, Endpoint) and isinstance(target, Endpoint):  # user rules need two portals
            wanted_users = user_ids_of(user_rules, "deal", context)
            users = await self.users.match(source.portal, target.portal, wanted_users, observer)
            context = dataclasses.replace(context, users=users)
        deal_rules = _without_echo(route.deal, found.deal, deal_link.returned if deal_link else {})
        deal_values = map_fields(deal_rules, "deal", context)
        contact_values = (
            map_fields(route.contact.fields, "contact", context) if route.contact and found.contact else None
        )
        company_values = (
            map_fields(route.company.fields, "company", context) if route.company and found.company else None
        )
        rows = map_products(found.rows) if route.products else None
        mapped = {"deal": deal_values, "contact": contact_values, "company": company_values, "rows": rows}
        key = content_key(source.key, route.name, deal_id, str(found.deal.get(kind.stage_field) or ""), mapped)
        held = await self.dedupe.claim(key, run_id)
        if held is not None:
            target_id, url = _target_of(deal_link, target, route)
            ref = deal_link.target_ref if deal_link is not None else None
            note = f"the same content was delivered by run {held}"
            return DeliveryResult(target_id, url, "skipped", note=note, target_ref=ref)
        try:
            if isinstance(target, Receiver):
                assert isinstance(source, Endpoint)  # the route file refuses inbound -> endpoint
                handed = Mapped(deal_values, contact_values, company_values, rows)
                return await self.endpoints.write(
                    route, source, target, deal_id, found.deal, handed, deal_link, run_id=run_id, observer=observer
                )
            return await self._write(
                route,
                source,
                target,
                deal_id,
                links,
                found,
                observer,
                repeated,
                (deal_values, contact_values, company_values, rows),
            )
        except (BitrixError, ReceiverError) as exc:
            if not (exc.retryable or exc.uncertain):
                await self.dedupe.release(key, run_id)
            raise

    async def _write(
        self,
        route: Route,
        source: Source,
        target: Endpoint,
        deal_id: int,
        links: Mapping[tuple[str, int], Link],
        found: SourceRecord,
        observer: CallObserver,
        repeated: bool,
        values: tuple[dict[str, Any], dict[str, Any] | None, dict[str, Any] | None, list[dict[str, Any]] | None],
    ) -> DeliveryResult:
        deal_values, contact_values, company_values, rows = values
        deal_link = links.get((route.source_entity.entity, deal_id))
        writer = TargetWriter(self.pool, self._creating, route, source, target, links, observer)
        try:
            # Both lookups at once, so they share the target's next request; the first failure is raised as it is.
            contact_ref, company_ref = await _together(
                writer.party("CONTACT", route.contact, found.contact, contact_values, repeated),
                writer.party("COMPANY", route.company, found.company, company_values, repeated),
            )
            deal_target = deal_link.target_id if deal_link is not None else None
            if deal_target is None and repeated:
                deal_target = await writer.find_origin(route.source_entity.entity, deal_id)
            return await writer.deal(
                deal_id, deal_target, deal_link, deal_values, rows, contact_ref, company_ref, found.deal
            )
        except BaseException as exc:
            # Deliveries waiting for a contact or company this one was to create must not wait forever: they fail
            # with the same error (and are retried), whatever broke here.
            await asyncio.shield(writer.abandon(exc))
            raise

    async def _read_source(self, route: Route, source: Endpoint, deal_id: int, observer: CallObserver) -> SourceRecord:
        """One round trip: the deal, its rows, and its contact, company and requisites (only what the route uses),
        found through the deal's own CONTACT_ID and COMPANY_ID (``$result[deal][...]``). The related records are read
        by list filters and checked against the deal's ids here: a deal without a contact (an empty reference) reads
        nothing wrong, whatever the portal makes of an empty filter value. The reads may fail one by one, so the chain
        asks for no halt."""
        kind = route.source_entity
        chain: list[tuple[str, str, dict[str, Any]]] = [("deal", kind.method("get"), {"id": deal_id})]
        if route.products:
            chain.append(("rows", kind.method("productrows.get"), {"id": deal_id}))
        if route.contact:
            chain.append(("contact", "crm.contact.list", _by_id("$result[deal][CONTACT_ID]")))
        if route.company:
            chain.append(("company", "crm.company.list", _by_id("$result[deal][COMPANY_ID]")))
        if reads_tax_number(route):
            flt = {"ENTITY_TYPE_ID": 4, "ENTITY_ID": "$result[deal][COMPANY_ID]"}
            chain.append(("requisites", "crm.requisite.list", {"filter": flt, "select": _REQUISITE, "start": -1}))
        got = await source.portal.chain(chain, observer=observer, halt=False)
        deal = got["deal"].unwrap()
        rows = [row for row in (got["rows"].unwrap() if "rows" in got else None) or [] if isinstance(row, dict)]
        contact_id, company_id = record_id(deal.get("CONTACT_ID")), record_id(deal.get("COMPANY_ID"))
        contact = _record(got.get("contact"), contact_id)
        company = _record(got.get("company"), company_id)
        if company is not None and "requisites" in got:
            requisites = [r for r in got["requisites"].unwrap() or [] if record_id(r.get("ENTITY_ID")) == company_id]
            inn = next((str(r["RQ_INN"]) for r in requisites if r.get("RQ_INN")), None)
            company = {**company, TAX_NUMBER: inn}
        return SourceRecord(deal, contact, company, rows)


def _target_of(link: Link | None, target: Endpoint | Receiver, route: Route) -> tuple[int | None, str | None]:
    """The target record's id and page of a linked delivery (none for an endpoint's record: it has its ref)."""
    if link is None or not isinstance(target, Endpoint) or link.target_id <= 0:
        return None, None
    return link.target_id, deal_url(target, link.target_id, route.target_entity)


# Everything a contact or company has: plain and user fields, and the multi-fields that "*" leaves out.
_PARTY_SELECT = ["*", "UF_*", "PHONE", "EMAIL", "WEB", "IM"]
_REQUISITE = ["ID", "ENTITY_ID", "RQ_INN"]


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


def _by_id(reference: str) -> dict[str, Any]:
    # start=-1: no COUNT(*) for a lookup that finds one record (REFERENCE 2.3).
    return {"filter": {"ID": reference}, "select": _PARTY_SELECT, "start": -1}


def _record(result: CommandResult | None, wanted: int) -> dict[str, Any] | None:
    """The record with id ``wanted`` from a list read, or None when the deal has none; a failed read of a record
    the deal does have is raised."""
    if result is None or not wanted:
        return None
    found = result.unwrap()
    return next((r for r in found or [] if isinstance(r, dict) and record_id(r.get("ID")) == wanted), None)
