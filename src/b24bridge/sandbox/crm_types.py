"""Smart processes (``crm.type.*``): the type records, their relations and their default funnel.

A type is kept as the docs' ``type`` object (docs crm/data-types.md#type, crm-type-add.md) with camelCase keys,
times as unix timestamps. Its items are ``World.records("DYNAMIC_{entityTypeId}")`` (``crm_items``), its funnels
sit in ``World.categories`` beside the deal funnels and its stages in ``World.statuses`` (``crm_categories``).

``entityTypeId``: given, it must lie in 128..191 or be an even number from 1030 (docs crm-type-add.md; 192 starts
``CCrmOwnerType``'s suspended types, read in public source); not given, it is the first free one from 128 (docs
crm/data-types.md#object_type: the smart process ``CRM_1`` is ``DYNAMIC_128``), then even ones from 1030.
[inferred] that order; the newest public source draws it from a sequence in the 1030 range instead.

Relations (docs crm-type-add.md ``relations``): a type declares ``parent`` and ``child`` types; both sides see a
link, whichever declared it. ``isClientEnabled`` adds contacts and companies as predefined parents. Each parent that
is not predefined gives the items a ``parentId{entityTypeId}`` field (docs crm-item-fields.md example).
"""

from __future__ import annotations

from typing import Any

from . import crm_categories as funnels
from .crm_fields import FieldDef
from .errors import RestError
from .state import World
from .wire import as_list, iso

SPA_RANGE = range(128, 192)
BIG_RANGE_START = 1030
TYPE_COUNTER = "crm_type"
# The type's switches in the docs' answer order, with their crm.type.add defaults.
FLAGS: tuple[tuple[str, str], ...] = (
    ("isCategoriesEnabled", "N"),
    ("isStagesEnabled", "N"),
    ("isBeginCloseDatesEnabled", "N"),
    ("isClientEnabled", "N"),
    ("isUseInUserfieldEnabled", "N"),
    ("isLinkWithProductsEnabled", "N"),
    ("isMycompanyEnabled", "N"),
    ("isDocumentsEnabled", "N"),
    ("isSourceEnabled", "N"),
    ("isObserversEnabled", "N"),
    ("isRecyclebinEnabled", "N"),
    ("isAutomationEnabled", "N"),
    ("isBizProcEnabled", "N"),
    ("isSetOpenPermissions", "Y"),
    ("isPaymentsEnabled", "N"),
    ("isCountersEnabled", "N"),
)
# docs data-types.md#type: "system field"; [inferred] not writable through REST.
SYSTEM_FLAGS = frozenset({"isPaymentsEnabled", "isCountersEnabled"})
LINKED_USER_FIELDS = ("CALENDAR_EVENT|UF_CRM_CAL_EVENT", "TASKS_TASK|UF_CRM_TASK", "TASKS_TASK_TEMPLATE|UF_CRM_TASK")
CLIENT_PARENTS = (3, 4)
# System types a smart process can be linked with, by the name a parentId field shows (docs crm-item-fields.md: "Lead",
# "Deal"). [inferred] the set: the types the docs' relation examples use, and quotes.
LINKABLE = {1: "Lead", 2: "Deal", 3: "Contact", 4: "Company", 7: "Estimate", 31: "Invoice"}
# For crm.type.list filters and order: the type's scalar fields (docs crm-type-fields.md).
FIELDS: dict[str, FieldDef] = {
    f.name: f
    for f in (
        FieldDef("id", "integer", "ID"),
        FieldDef("title", "string", "Title"),
        FieldDef("code", "string", "Symbolic Code"),
        FieldDef("createdBy", "user", "Created By"),
        FieldDef("entityTypeId", "integer", "Type Identifier"),
        FieldDef("customSectionId", "integer", "Digital Workspace"),
        *(FieldDef(name, "boolean", name) for name, _ in FLAGS),
        FieldDef("createdTime", "datetime", "Created On"),
        FieldDef("updatedTime", "datetime", "Modified On"),
        FieldDef("updatedBy", "user", "Modified By"),
    )
}
_TRUE = {"Y", "1", "TRUE"}


def by_entity_type(world: World, entity_type_id: int) -> dict[str, Any] | None:
    return next((t for t in world.spa_types.values() if int(t["entityTypeId"]) == entity_type_id), None)


def enabled(spa: dict[str, Any], flag: str) -> bool:
    return spa.get(flag) == "Y"


def _yes_no(value: Any) -> str:
    """A boolean switch as the type stores it; [inferred] ``true``/``1`` count as ``Y`` like in ORM boolean fields."""
    return "Y" if str(value).strip().upper() in _TRUE else "N"


def _allowed(value: int) -> bool:
    return value in SPA_RANGE or (value >= BIG_RANGE_START and value % 2 == 0)


def _out_of_range() -> RestError:
    return RestError("INVALID_ARG_VALUE", "entityTypeId is out of allowed range")


def _entity_type_id(world: World, raw: Any) -> int:
    if raw in (None, "", 0, "0"):
        taken = {int(t["entityTypeId"]) for t in world.spa_types.values()}
        free = next((n for n in SPA_RANGE if n not in taken), None)
        if free is None:
            free = next(n for n in range(BIG_RANGE_START, BIG_RANGE_START + 2 * (len(taken) + 1), 2) if n not in taken)
        return free
    try:
        value = int(str(raw).strip())
    except ValueError as exc:
        raise _out_of_range() from exc
    # [inferred] a taken entityTypeId is refused with the one documented entityTypeId error.
    if not _allowed(value) or by_entity_type(world, value) is not None:
        raise _out_of_range()
    return value


def _title_required() -> RestError:
    return RestError("BX_EMPTY_REQUIRED", 'Field "Title" is required')  # [inferred] the ORM's required-field error


def create(world: World, fields: dict[str, Any], user_id: int, now: float) -> dict[str, Any]:
    """A new type with its default funnel and that funnel's stock stages."""
    title = str(fields.get("title") or "").strip()
    if not title:
        raise _title_required()
    entity_type_id = _entity_type_id(world, fields.get("entityTypeId"))
    spa: dict[str, Any] = {
        "id": world.next_id(TYPE_COUNTER),
        "title": title,
        "code": "",
        "createdBy": user_id,
        "entityTypeId": entity_type_id,
        "customSectionId": None,
        **{name: default for name, default in FLAGS},
        "createdTime": now,
        "updatedTime": now,
        "updatedBy": user_id,
        "relations": {"parent": [], "child": []},
        "linkedUserFields": dict.fromkeys(LINKED_USER_FIELDS, "N"),
        "customSections": [],
    }
    world.spa_types[spa["id"]] = spa
    _apply(world, spa, fields)
    # [inferred] the default funnel's name and sort (the deals' "General"; the ORM's default sort 500).
    funnels.create_category(world, "General", 500, now, entity_type_id, is_default=True)
    return spa


def update(world: World, spa: dict[str, Any], fields: dict[str, Any], user_id: int, now: float) -> None:
    """docs crm-type-update.md: only the fields passed change; ``entityTypeId`` cannot."""
    if "title" in fields and not str(fields["title"] or "").strip():
        raise _title_required()
    _apply(world, spa, {k: v for k, v in fields.items() if k != "entityTypeId"})
    spa.update(updatedTime=now, updatedBy=user_id)


def _apply(world: World, spa: dict[str, Any], fields: dict[str, Any]) -> None:
    if "title" in fields:
        spa["title"] = str(fields["title"]).strip()
    for name, _ in FLAGS:
        if name in fields and name not in SYSTEM_FLAGS:
            spa[name] = _yes_no(fields[name])
    linked = fields.get("linkedUserFields")
    # docs: only with isUseInUserfieldEnabled = Y, and only the strings "true"/"false" count.
    if enabled(spa, "isUseInUserfieldEnabled") and isinstance(linked, dict):
        for name, value in linked.items():
            if name in spa["linkedUserFields"]:
                spa["linkedUserFields"][name] = "Y" if str(value) == "true" else "N"
    relations = fields.get("relations")
    if isinstance(relations, dict):
        for side, other in (("parent", "child"), ("child", "parent")):
            if side in relations:
                _set_relations(world, spa, side, other, relations[side])


def _set_relations(world: World, spa: dict[str, Any], side: str, other: str, raw: Any) -> None:
    """docs: relations are overwritten in full; a link that cannot be saved is dropped without an error."""
    own = int(spa["entityTypeId"])
    for peer in world.spa_types.values():  # links the peers declared towards this type on this side go too
        peer["relations"][other] = [r for r in peer["relations"][other] if int(r["entityTypeId"]) != own]
    kept: dict[int, dict[str, Any]] = {}
    for entry in as_list(raw):
        if not isinstance(entry, dict):
            continue
        try:
            entity_type_id = int(str(entry.get("entityTypeId")).strip())
        except ValueError:
            continue
        if entity_type_id == own or (entity_type_id not in LINKABLE and by_entity_type(world, entity_type_id) is None):
            continue
        shown = "Y" if str(entry.get("isChildrenListEnabled")) == "true" else "N"  # docs: Y/N do not work
        kept[entity_type_id] = {"entityTypeId": entity_type_id, "isChildrenListEnabled": shown}
    spa["relations"][side] = list(kept.values())


def links(world: World, spa: dict[str, Any], side: str) -> list[dict[str, Any]]:
    """The type's parents or children as crm.type.get shows them, predefined client links first."""
    own = int(spa["entityTypeId"])
    other = "child" if side == "parent" else "parent"
    found: dict[int, dict[str, Any]] = {}
    if side == "parent" and enabled(spa, "isClientEnabled"):
        for entity_type_id in CLIENT_PARENTS:
            found[entity_type_id] = {"entityTypeId": entity_type_id, "isChildrenListEnabled": "Y", "isPredefined": "Y"}
    for entry in spa["relations"][side]:
        found.setdefault(int(entry["entityTypeId"]), {**entry, "isPredefined": "N"})
    for peer in world.spa_types.values():
        for entry in peer["relations"][other]:
            if int(entry["entityTypeId"]) == own:
                shown = entry["isChildrenListEnabled"]
                link = {"entityTypeId": int(peer["entityTypeId"]), "isChildrenListEnabled": shown, "isPredefined": "N"}
                found.setdefault(link["entityTypeId"], link)
    return list(found.values())


def parent_fields(world: World, spa: dict[str, Any]) -> list[tuple[int, str]]:
    """(entityTypeId, title) of each parent that gives the items a ``parentId{entityTypeId}`` field."""
    result = []
    for link in links(world, spa, "parent"):
        if link["isPredefined"] == "Y":
            continue
        entity_type_id = int(link["entityTypeId"])
        peer = by_entity_type(world, entity_type_id)
        result.append((entity_type_id, str(peer["title"]) if peer is not None else LINKABLE[entity_type_id]))
    return result


def view(world: World, spa: dict[str, Any], tz: Any, full: bool = True) -> dict[str, Any]:
    """The type as crm.type.get answers it; ``full=False``: as crm.type.list shows it (no relations, linked user
    fields or custom sections — docs crm-type-list.md example)."""
    shown = {k: v for k, v in spa.items() if k not in ("relations", "linkedUserFields", "customSections")}
    shown["createdTime"] = iso(float(spa["createdTime"]), tz)
    shown["updatedTime"] = iso(float(spa["updatedTime"]), tz)
    if full:
        shown["relations"] = {"parent": links(world, spa, "parent"), "child": links(world, spa, "child")}
        shown["linkedUserFields"] = dict(spa["linkedUserFields"])
        shown["customSections"] = list(spa["customSections"])
    return shown


def delete(world: World, spa: dict[str, Any]) -> None:
    """docs crm-type-delete.md: only a type without items; its funnels, stages and links go with it."""
    entity_type_id = int(spa["entityTypeId"])
    if world.records(funnels.dynamic_entity(entity_type_id)):
        raise RestError("BX_ERROR", "You cannot delete an entity type that has elements")
    for category in funnels.categories_of(world, entity_type_id):
        funnels.delete_category(world, int(category["id"]))
    for peer in world.spa_types.values():
        for side in ("parent", "child"):
            peer["relations"][side] = [r for r in peer["relations"][side] if int(r["entityTypeId"]) != entity_type_id]
    world.crm.pop(funnels.dynamic_entity(entity_type_id), None)
    del world.spa_types[int(spa["id"])]
