"""The target side of one delivery: which contact, company and deal to create or update, then one chain that writes
them (``halt``: nothing is written after a failed write) and the id map rows of what was written.

A contact or company shared by many deals is created once: in this process the writers of one ``Deliverer`` wait
for each other's creations, and across processes a placeholder row in the id map claims the creation.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Mapping
from typing import Any

from psycopg_pool import AsyncConnectionPool

from b24bridge.bitrix import BitrixError, CallObserver, CommandResult

from . import repository
from .connections import Endpoint
from .entities import DEAL, PARTIES, RecordKind
from .mapping import MULTIFIELDS, changed, fingerprint, match_lookups
from .repository import Link
from .route_model import TAX_NUMBER, EntityRule, Route, key_fields
from .schemas import ORIGINATOR_ID, Busy, DeliveryResult

PRODUCTS_KEY = "__products__"
# How long a delivery waits for a contact or company another process is creating, and when that claim is stale.
CLAIM_WAIT = 20.0
CLAIM_STALE = dt.timedelta(seconds=60)
# Requisite preset "organisation" of a stock portal (REFERENCE 6; crm.requisite.preset.list).
COMPANY_PRESET = 1


def origin_id(source_key: str, entity: str, source_id: int) -> str:
    return f"{source_key}:{entity}:{source_id}"


def deal_url(target: Endpoint, deal_id: int, kind: RecordKind = DEAL) -> str:
    """The record's page in the target portal (a deal's, or the route's target entity's)."""
    return kind.url(target.web_url, deal_id)


def record_id(value: Any) -> int:
    try:
        return int(value or 0)
    except (TypeError, ValueError):
        return 0


class TargetWriter:
    """The target side of one delivery: which records to create or update, then one chain that writes them."""

    def __init__(
        self,
        pool: AsyncConnectionPool,
        creating: dict[tuple[str, str, int], asyncio.Future[int]],
        route: Route,
        source_key: str,
        target: Endpoint,
        links: Mapping[tuple[str, int], Link],
        observer: CallObserver,
        run_id: int,
    ) -> None:
        self.pool = pool
        self.run_id = run_id
        # New contacts and companies being created in this process (shared by every writer of one Deliverer).
        self.creating = creating
        self.route = route
        self.source_key = source_key
        self.target = target
        self.links = links
        self.observer = observer
        self.chain: list[tuple[str, str, dict[str, Any]]] = []
        self.new_links: list[Link] = []
        self.waiting: list[tuple[tuple[str, str, int], asyncio.Future[int]]] = []
        # Creations claimed in the database (placeholder rows), released if this delivery fails for certain.
        self.claims: list[tuple[str, str, str, int]] = []
        # The chain went out and how it ended is not known: its creations may have happened.
        self.unsure = False
        # Claims are taken in one order, the contact's before the company's: a delivery holding a company's claim
        # then waits for nothing, so no two can each hold what the other waits for (they did, for CLAIM_WAIT).
        self._contact_claimed = asyncio.Event()
        self._contact_claiming = False

    async def find_origin(self, entity: str, source_id: int) -> int | None:
        """A record this bridge created for ``source_id`` earlier (its map row lost, or its write uncertain)."""
        kind = PARTIES.get(entity) or self.route.target_entity
        method, params = kind.find(kind.origin(ORIGINATOR_ID, origin_id(self.source_key, entity, source_id)))
        found = kind.records(await self.target.portal.call(method, params, observer=self.observer))
        return record_id(found[0].get("ID")) if found else None

    async def _match(self, entity: str, rule: EntityRule, record: Mapping[str, Any]) -> int | None:
        """The first key (in the rule's order) that finds a target record: its id. All lookups go at once, so they
        share the target's next request."""
        portal, calls = self.target.portal, []
        for key, values in match_lookups(rule, record):
            fields = key_fields(key)
            params: dict[str, Any]
            if key == TAX_NUMBER:
                params = {"filter": {"RQ_INN": values[0], "ENTITY_TYPE_ID": 4}, "select": ["ENTITY_ID"]}
                calls.append(("tax", portal.call("crm.requisite.list", params, observer=self.observer)))
            elif fields is not None:
                params = {
                    "filter": {fields[1]: values[0]},
                    "select": ["ID"],
                    "order": {"ID": "ASC"},
                    "start": -1,
                }
                method = f"crm.{entity.lower()}.list"
                calls.append(("field", portal.call(method, params, observer=self.observer)))
            else:
                params = {"type": key.upper(), "values": values[:20], "entity_type": entity}
                calls.append(("comm", portal.call("crm.duplicate.findbycomm", params, observer=self.observer)))
        answers = await asyncio.gather(*(call for _, call in calls))
        for (kind, _), answer in zip(calls, answers, strict=True):
            if kind == "tax" and isinstance(answer, list) and answer:
                return record_id(answer[0].get("ENTITY_ID"))
            if kind == "field" and isinstance(answer, list) and answer:
                return record_id(answer[0].get("ID"))
            if kind == "comm" and isinstance(answer, dict) and answer.get(entity):
                return record_id(answer[entity][0])
        return None

    async def party(
        self,
        entity: str,
        rule: EntityRule | None,
        record: Mapping[str, Any] | None,
        values: dict[str, Any] | None,
        repeated: bool,
    ) -> Any:
        """The deal's contact or company in the target: its id, or a ``$result[...]`` reference to its creation."""
        if entity == "CONTACT":
            self._contact_claiming = True  # set before the company's party starts (tasks start in order)
        try:
            return await self._party(entity, rule, record, values, repeated)
        finally:
            if entity == "CONTACT":
                self._contact_claimed.set()

    async def _party(
        self,
        entity: str,
        rule: EntityRule | None,
        record: Mapping[str, Any] | None,
        values: dict[str, Any] | None,
        repeated: bool,
    ) -> Any:
        if rule is None or record is None or values is None:
            return None
        source_id = record_id(record.get("ID"))
        link = self.links.get((entity, source_id))
        tax = values.pop(TAX_NUMBER, None)
        if link is not None:
            update = {k: v for k, v in changed(values, link.delivered).items() if k not in MULTIFIELDS}
            if update:
                method = f"crm.{entity.lower()}.update"
                self.chain.append((entity.lower(), method, {"id": link.target_id, "fields": update}))
            self._link(entity, source_id, link.target_id, values, link)
            return link.target_id
        if entity != "CONTACT" and self._contact_claiming:
            await self._contact_claimed.wait()
        key = (self.target.key, entity, source_id)
        pending = self.creating.get(key)
        if pending is not None:
            target_id = await asyncio.shield(pending)
            self._link(entity, source_id, target_id, values, None)
            return target_id
        elsewhere, taken_over = await self._claim(entity, source_id)
        if entity == "CONTACT":
            self._contact_claimed.set()  # the company's claim may go; the lookups below go together
        if elsewhere:
            self._link(entity, source_id, elsewhere, values, None)
            return elsewhere
        # Only the claim's holder stands for the creation in this process. A writer that waited here for another
        # still waiting for the claim kept the run holding it (a killed attempt of its own) from ever taking it.
        future: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self.creating[key] = future
        self.waiting.append((key, future))
        found = await self._match(entity, rule, record)
        if found is None and (repeated or taken_over):
            found = await self.find_origin(entity, source_id)
        if found is not None:
            self._settle(key, found)
            self._link(entity, source_id, found, values, None)
            return found
        name = entity.lower()
        fields = {**values, "ORIGINATOR_ID": ORIGINATOR_ID, "ORIGIN_ID": origin_id(self.source_key, entity, source_id)}
        self.chain.append((name, f"crm.{name}.add", {"fields": fields, "params": {"REGISTER_SONET_EVENT": "N"}}))
        if entity == "COMPANY" and tax:
            requisite = {
                "ENTITY_TYPE_ID": 4,
                "ENTITY_ID": f"$result[{name}]",
                "PRESET_ID": COMPANY_PRESET,
                "NAME": str(values.get("TITLE") or tax),
                "RQ_INN": str(tax),
            }
            self.chain.append(("requisite", "crm.requisite.add", {"fields": requisite}))
        self._link(entity, source_id, None, values, None)
        return f"$result[{name}]"

    def _link(
        self, entity: str, source_id: int, target_id: int | None, values: dict[str, Any], old: Link | None
    ) -> None:
        self.new_links.append(
            Link(
                self.source_key,
                self.target.key,
                entity,
                source_id,
                target_id or 0,
                self.route.name,
                values,
                None,
                old.returned if old else {},
                old.target_modified if old else None,
            )
        )

    async def _claim(self, entity: str, source_id: int) -> tuple[int, bool]:
        """Claim the creation across processes; when another run holds it, wait for its record. The record's id
        (0: the claim is ours), and whether the claim was taken over (its earlier holder may have created it)."""
        pool, keys = self.pool, (self.source_key, self.target.key, entity, source_id)
        deadline = asyncio.get_running_loop().time() + CLAIM_WAIT
        while True:
            async with pool.connection() as conn:
                claim = await repository.claim_creation(conn, *keys, self.route.name, CLAIM_STALE, self.run_id)
                if claim is not None:
                    self.claims.append(keys)
                    return 0, claim == "taken_over"
                created = await repository.created_target(conn, *keys)
            if created:
                return created, False
            if asyncio.get_running_loop().time() > deadline:
                raise Busy(f"another process is still creating the {entity.lower()} of source record {source_id}")
            await asyncio.sleep(0.2)

    async def abandon(self, error: BaseException) -> None:
        """Fail the deliveries waiting for this one's creations, and give up its claims unless the chain may have
        created them: then the claims stay for this run's next attempt, which takes them over and looks the records
        up (ORIGIN_ID); another run taking them afresh would create them again."""
        for key, _ in self.waiting:
            self._settle(key, None, error)
        if self.claims and not self.unsure:
            async with self.pool.connection() as conn:
                for keys in self.claims:
                    await repository.release_creation(conn, *keys)

    def _settle(self, key: tuple[str, str, int], target_id: int | None, error: BaseException | None = None) -> None:
        """Tell the deliveries waiting for this writer's contact or company how it went (once)."""
        future = next((f for k, f in self.waiting if k == key), None)
        if future is None or future.done():
            return
        if self.creating.get(key) is future:
            del self.creating[key]
        if target_id is not None:
            future.set_result(target_id)
        else:
            future.set_exception(error or RuntimeError("creation failed"))
            future.exception()  # retrieved: nobody may be waiting, and that is fine

    async def deal(
        self,
        deal_id: int,
        target_id: int | None,
        link: Link | None,
        values: dict[str, Any],
        rows: list[dict[str, Any]] | None,
        contact_ref: Any,
        company_ref: Any,
        source_deal: Mapping[str, Any],
    ) -> DeliveryResult:
        kind, source_kind = self.route.target_entity, self.route.source_entity.entity
        fields = dict(values)
        if contact_ref is not None:
            fields["CONTACT_ID"] = contact_ref
        if company_ref is not None:
            fields["COMPANY_ID"] = company_ref
        delivered = dict(link.delivered) if link is not None else {}
        rows_print = fingerprint({"rows": rows}) if rows is not None else None
        if target_id is None:
            fields |= kind.origin(ORIGINATOR_ID, origin_id(self.source_key, source_kind, deal_id))
            self.chain.append(("deal", *kind.add(fields)))
            deal_ref: Any = kind.ref("deal")
            action = "created"
            update = fields
        else:
            update = changed({k: v for k, v in fields.items() if not str(v).startswith("$result[")}, delivered)
            update |= {k: v for k, v in fields.items() if str(v).startswith("$result[")}
            if update:
                self.chain.append(("deal", *kind.update(target_id, update)))
            deal_ref = target_id
            action = "updated" if update else "unchanged"
        if rows is not None and kind.has_products and rows_print != delivered.get(PRODUCTS_KEY):
            self.chain.append(("rows", kind.method("productrows.set"), {"id": deal_ref, "rows": rows}))
            if action == "unchanged":
                action = "updated"
        results = await self._write()
        if target_id is None:
            target_id = kind.new_id(results["deal"].value)
        record = {**{k: v for k, v in fields.items() if not str(v).startswith("$result[")}}
        for name, entity in (("contact", "CONTACT_ID"), ("company", "COMPANY_ID")):
            if name in results and results[name].error is None and isinstance(results[name].value, int):
                record[entity] = results[name].value
        if rows_print is not None:
            record[PRODUCTS_KEY] = rows_print
        modified = source_deal.get("DATE_MODIFY")
        self.new_links.append(
            Link(
                self.source_key,
                self.target.key,
                source_kind,
                deal_id,
                target_id,
                self.route.name,
                {**delivered, **record},
                str(modified) if modified else None,
                link.returned if link else {},
                link.target_modified if link else None,
            )
        )
        await self._save_links()
        changed_names = sorted(k for k in update if k not in ("ORIGINATOR_ID", "ORIGIN_ID", "XML_ID"))
        return DeliveryResult(
            target_id,
            deal_url(self.target, target_id, kind),
            action,
            changed_names,
            record_id(record.get("CONTACT_ID")) or None,
            record_id(record.get("COMPANY_ID")) or None,
        )

    async def _write(self) -> dict[str, CommandResult]:
        """The chain (if any): every new record's id fills its map row; the first failure is raised after the rows
        of what did get written are saved, so a retry links them instead of creating them again."""
        results: dict[str, CommandResult] = {}
        try:
            if self.chain:
                results = await self.target.portal.chain(self.chain, observer=self.observer)
        except BaseException as exc:
            self.unsure = not isinstance(exc, BitrixError) or exc.uncertain
            for key, _ in self.waiting:
                self._settle(key, None, exc)
            raise
        failure: BitrixError | None = None
        for name, _method, _params in self.chain:
            result = results[name]
            if result.error is not None and failure is None:
                failure = result.error
        for link_index, link in enumerate(self.new_links):
            if link.target_id == 0:
                created = results.get(link.entity.lower())
                new_id = record_id(created.value) if created is not None and created.error is None else 0
                self.new_links[link_index] = Link(**{**link.__dict__, "target_id": new_id})
        for key, _ in self.waiting:
            entity = key[1]
            created_link = next((x for x in self.new_links if x.entity == entity and x.target_id), None)
            self._settle(key, created_link.target_id if created_link else None, failure)
        if failure is not None:
            await self._save_links()
            raise failure
        return results

    async def _save_links(self) -> None:
        keep = [link for link in self.new_links if link.target_id]
        self.new_links = []
        if not keep:
            return
        # Each row stands alone (a retry links whatever was saved), so no transaction around them.
        async with self.pool.connection() as conn:
            await repository.save_links(conn, keep)
