"""One portal's field and stage lists as ``routes check`` needs them, read in a handful of requests: the legacy
entities' ``crm.*.fields``, the funnels and every ``crm.status.list`` list, and each smart process's
``crm.item.fields`` and pipelines (``crm.type.list``, ``crm.category.list``)."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ..bitrix import BitrixError, Portal
from .entities import DEAL, RecordKind, process_titled, process_titles, process_type_id, smart_process

FieldMap = Mapping[str, Mapping[str, Any]]


@dataclass(frozen=True)
class ProcessSchema:
    """A smart process: its title, its fields (by legacy names) and its pipelines (id -> name)."""

    title: str
    fields: FieldMap
    categories: Mapping[int, str]


@dataclass(frozen=True)
class PortalSchema:
    """One portal's lists as the checks need them: ``crm.{deal,contact,company}.fields`` as returned, deal stages per
    funnel (in order), funnels (id -> name) and the other reference lists (``crm.status.list`` by ENTITY_ID), and its
    smart processes by entityTypeId."""

    deal: FieldMap
    contact: FieldMap
    company: FieldMap
    stages: Mapping[int, tuple[str, ...]]
    categories: Mapping[int, str]
    statuses: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    lead: FieldMap = field(default_factory=dict)
    processes: Mapping[int, ProcessSchema] = field(default_factory=dict)

    def fields(self, entity: str) -> FieldMap:
        """``deal``, ``lead``, ``contact``, ``company``, or a smart process's ``DYNAMIC_<entityTypeId>``."""
        type_id = process_type_id(entity)
        if type_id is not None:
            process = self.processes.get(type_id)
            return process.fields if process is not None else {}
        return {"deal": self.deal, "lead": self.lead, "contact": self.contact, "company": self.company}[entity]

    def stages_for(self, kind: RecordKind, category: int | None) -> tuple[str, ...]:
        """A deal's or an item's stages (of one pipeline, or of all); a lead's statuses (``STATUS``, one list)."""
        if kind == DEAL:
            return self.stages_of(category)
        if kind.is_item:
            process = self.processes.get(kind.entity_type_id)
            pipelines = () if process is None else (process.categories if category is None else (category,))
            return tuple(stage for c in pipelines for stage in self.statuses.get(kind.stage_list(c), ()))
        return self.statuses.get(kind.status_list, ())

    def stages_of(self, category: int | None) -> tuple[str, ...]:
        """The stages of one funnel, or of every funnel (``None``)."""
        if category is not None:
            return self.stages.get(category, ())
        return tuple(stage for stages in self.stages.values() for stage in stages)

    def categories_of(self, entity: str) -> Mapping[int, str]:
        type_id = process_type_id(entity)
        if type_id is not None:
            process = self.processes.get(type_id)
            return process.categories if process is not None else {}
        return self.categories

    def process(self, kind: RecordKind) -> tuple[RecordKind | None, str]:
        """``kind`` as this portal has it (a title resolved to its entityTypeId), or None and why not."""
        if not kind.is_item:
            return kind, ""
        if kind.entity_type_id:
            found = kind if kind.entity_type_id in self.processes else None
        else:
            type_id = process_titled({i: p.title for i, p in self.processes.items()}, kind.process)
            found = smart_process(type_id, kind.process) if type_id is not None else None
        titles = ", ".join(f"{p.title} ({i})" for i, p in sorted(self.processes.items())) or "none"
        return found, "" if found is not None else f"no such smart process (the portal has: {titles})"


def schema_key(kind: RecordKind) -> str:
    """The name :meth:`PortalSchema.fields` knows a record kind by."""
    return kind.entity if kind.is_item else kind.name


async def fetch_schema(portal: Portal) -> PortalSchema:
    """Read the lists with a handful of requests (the ``fields`` calls share one batch)."""
    deal, lead, contact, company, categories, statuses, types = await asyncio.gather(
        portal.call("crm.deal.fields"),
        portal.call("crm.lead.fields"),
        portal.call("crm.contact.fields"),
        portal.call("crm.company.fields"),
        _all_rows(portal, "crm.category.list", {"entityTypeId": 2}),
        _all_rows(portal, "crm.status.list", {"order": {"SORT": "ASC"}}),
        _types(portal),
    )
    by_entity: dict[str, list[tuple[int, str]]] = {}
    for row in statuses:
        by_entity.setdefault(str(row["ENTITY_ID"]), []).append((int(row.get("SORT") or 0), str(row["STATUS_ID"])))
    ordered = {entity: tuple(status for _, status in sorted(rows)) for entity, rows in by_entity.items()}
    funnels = {int(row["id"]): str(row.get("name", "")) for row in categories}
    stages = {category: ordered.get(DEAL.stage_list(category), ()) for category in funnels}
    processes = await _processes(portal, types)
    return PortalSchema(deal, contact, company, stages, funnels, ordered, lead, processes)


async def _processes(portal: Portal, types: list[Any]) -> dict[int, ProcessSchema]:
    kinds = [(smart_process(type_id), title) for type_id, title in process_titles(types).items()]
    answers = await asyncio.gather(
        *(portal.call(*kind.fields()) for kind, _ in kinds),
        *(_all_rows(portal, "crm.category.list", {"entityTypeId": kind.entity_type_id}) for kind, _ in kinds),
    )
    described, pipelines = answers[: len(kinds)], answers[len(kinds) :]
    return {
        kind.entity_type_id: ProcessSchema(
            title, kind.field_map(fields), {int(row["id"]): str(row.get("name", "")) for row in rows}
        )
        for (kind, title), fields, rows in zip(kinds, described, pipelines, strict=True)
    }


async def _types(portal: Portal) -> list[Any]:
    """The smart processes; none where the portal refuses the list (a route naming one then says it is missing)."""
    try:
        return await _all_rows(portal, "crm.type.list", {})
    except BitrixError as exc:
        if exc.retryable or exc.uncertain:
            raise
        return []


async def _all_rows(portal: Portal, method: str, params: Mapping[str, Any]) -> list[Any]:
    return [row async for row in portal.list(method, params)]
