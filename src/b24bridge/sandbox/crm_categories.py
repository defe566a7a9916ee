"""Funnels (categories) of deals and smart processes and their stages, kept in the world as the portal keeps them.

The funnels of every entity type are one table with one id sequence (the docs' examples interleave them: deal funnels
9, 10, 11, smart-process funnels 30, 52, 87), each with its ``entityTypeId``. A funnel's stages are the rows of its
reference list:

* deals: ``DEAL_STAGE`` for the default funnel 0, ``DEAL_STAGE_{id}`` for the others, whose stage ids carry the prefix
  ``C{id}:`` (docs crm/deals/index.md, crm-status-add.md). A new funnel gets a copy of the stock stage set under its
  prefix, codes cut to 21 characters (docs tutorial how-to-get-elements-by-stage-filter.md shows
  ``C10:PREPAYMENT_INVOIC``).
* smart processes: ``DYNAMIC_{entityTypeId}_STAGE_{id}`` for every funnel, default one included, stage ids prefixed
  ``DT{entityTypeId}_{id}:`` (docs tutorial how-to-add-category-to-spa.md); a new funnel gets the five stock stages of
  ``crm_statuses.stock_spa_stages``. [inferred] their codes are not cut (no docs example is long enough to show it).

Which stage a deal ends up in follows the CRM's stage field (``Bitrix\\Crm\\Field\\Stage::processLogic``, newest copy
read in public source): a stage of the deal's own funnel is taken as given; on an update any other stage is ignored
and the deal keeps its stage; on a new deal it is replaced by the funnel's first stage of the same semantics (P/S/F),
an unknown stage counting as "in progress". No error either way. [inferred: that crm.deal.* goes through this layer
on today's cloud; the legacy CCrmDeal path stored an unknown stage with an empty semantic id]
"""

from __future__ import annotations

import copy
from typing import Any

from .crm_statuses import stock_spa_stages, stock_statuses
from .state import World

DEAL_ENTITY_TYPE_ID = 2
DEFAULT_CATEGORY_ID = 0
STATUS_ID_LIMIT = 21
# One sequence for the funnels of every entity type (named for the deals, which had it first: saved worlds keep it).
CATEGORY_COUNTER = "deal_category"
DYNAMIC_PREFIX = "DYNAMIC_"
# The stock stage set a new funnel is created with: the default funnel's stages as a new portal has them.
_STOCK_ENTITY = "DEAL_STAGE"
# A new funnel's stages: those of a new portal's default funnel, whatever was done to that one since.
_STOCK_STAGES = [row for row in stock_statuses() if row["ENTITY_ID"] == _STOCK_ENTITY]


def dynamic_entity(entity_type_id: int) -> str:
    """The name smart-process items go by in the world and in ``Sandbox.crm_changed``: ``DYNAMIC_128`` (the type's
    symbolic code, docs user-defined-object-types/index.md)."""
    return f"{DYNAMIC_PREFIX}{entity_type_id}"


def dynamic_type_id(entity: str) -> int | None:
    """``DYNAMIC_128`` → 128; None for any other entity name."""
    tail = entity[len(DYNAMIC_PREFIX) :] if entity.startswith(DYNAMIC_PREFIX) else ""
    return int(tail) if tail.isdigit() else None


def owner_entity(world: World, category_id: int) -> str:
    """The CRM entity whose records sit in the funnel: ``DEAL`` or ``DYNAMIC_128`` (its key in ``World.records``)."""
    entity_type_id = entity_type_of(world, category_id)
    return "DEAL" if entity_type_id == DEAL_ENTITY_TYPE_ID else dynamic_entity(entity_type_id)


def entity_type_of(world: World, category_id: int) -> int:
    """The entity type a funnel belongs to (a funnel that does not exist counts as a deal funnel)."""
    category = world.categories.get(category_id)
    return int(category["entityTypeId"]) if category is not None else DEAL_ENTITY_TYPE_ID


def stage_entity_id(world: World, category_id: int) -> str:
    """The ENTITY_ID of the funnel's stage list: ``DEAL_STAGE``, ``DEAL_STAGE_5`` or ``DYNAMIC_128_STAGE_3``."""
    entity_type_id = entity_type_of(world, category_id)
    if entity_type_id != DEAL_ENTITY_TYPE_ID:
        return f"{dynamic_entity(entity_type_id)}_STAGE_{category_id}"
    return _STOCK_ENTITY if category_id == DEFAULT_CATEGORY_ID else f"{_STOCK_ENTITY}_{category_id}"


def stage_prefix(world: World, category_id: int) -> str:
    entity_type_id = entity_type_of(world, category_id)
    if entity_type_id != DEAL_ENTITY_TYPE_ID:
        return f"DT{entity_type_id}_{category_id}:"
    return "" if category_id == DEFAULT_CATEGORY_ID else f"C{category_id}:"


def prefixed(world: World, category_id: int, status_id: str) -> str:
    """A stage code with the funnel's prefix, added when it is not there yet (docs crm-status-add.md)."""
    prefix = stage_prefix(world, category_id)
    if not prefix or status_id.startswith(prefix):
        return status_id
    if entity_type_of(world, category_id) == DEAL_ENTITY_TYPE_ID:
        return (prefix + status_id)[:STATUS_ID_LIMIT]
    return prefix + status_id


def categories_of(world: World, entity_type_id: int) -> list[dict[str, Any]]:
    """The funnels of one entity type, by sort then id (the order crm.category.list answers in)."""
    found = [c for c in world.categories.values() if int(c["entityTypeId"]) == entity_type_id]
    return sorted(found, key=lambda c: (int(c["sort"]), int(c["id"])))


def default_category(world: World, entity_type_id: int) -> int | None:
    return next((int(c["id"]) for c in categories_of(world, entity_type_id) if c.get("isDefault") == "Y"), None)


def category_of_entity_id(world: World, entity_id: str) -> int | None:
    """``DEAL_STAGE`` → 0, ``DEAL_STAGE_5`` → 5, ``DYNAMIC_128_STAGE_3`` → 3 when that funnel exists; else None."""
    return next((c for c in world.categories if stage_entity_id(world, c) == entity_id), None)


def _sorted(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return sorted(rows, key=lambda row: (int(row["SORT"]), int(row["ID"])))


def stages(world: World, category_id: int) -> list[dict[str, Any]]:
    entity_id = stage_entity_id(world, category_id)
    return _sorted([row for row in world.statuses if row["ENTITY_ID"] == entity_id])


def find_stage(world: World, category_id: int, stage_id: str) -> dict[str, Any] | None:
    return next((row for row in stages(world, category_id) if row["STATUS_ID"] == stage_id), None)


def semantics(row: dict[str, Any] | None) -> str:
    """P (in progress), S (success) or F (failure): crm.status.list's SEMANTICS, empty meaning in progress."""
    return str(row.get("SEMANTICS") or "P") if row is not None else "P"


def start_stage(world: World, category_id: int) -> str | None:
    rows = stages(world, category_id)
    return str(rows[0]["STATUS_ID"]) if rows else None


def any_stage(world: World, entity_type_id: int, stage_id: str) -> dict[str, Any] | None:
    """A stage of any funnel of the entity type (``Factory::getStage``: the stage's own funnel need not be known)."""
    for category in categories_of(world, entity_type_id):
        row = find_stage(world, int(category["id"]), stage_id)
        if row is not None:
            return row
    return None


def first_stage_like(world: World, category_id: int, wanted: str | None) -> str | None:
    """The funnel's first stage with the semantics of ``wanted`` (a stage of any funnel of the same entity type; an
    unknown one counts as in progress): ``Stage::pickFirstStageIdInCurrentCategory``."""
    entity_type_id = entity_type_of(world, category_id)
    wanted_semantics = semantics(any_stage(world, entity_type_id, wanted)) if wanted else "P"
    for row in stages(world, category_id):
        if semantics(row) == wanted_semantics:
            return str(row["STATUS_ID"])
    return None


def resolve_stage(world: World, category_id: int, wanted: str | None, current: str | None) -> str | None:
    """The stage a deal of ``category_id`` really gets when ``wanted`` is written (see the module docstring)."""
    if wanted and find_stage(world, category_id, wanted) is not None:
        return wanted
    if current is not None:
        return current
    return first_stage_like(world, category_id, wanted) or start_stage(world, category_id)


def existing_category(world: World, value: Any) -> int:
    """CATEGORY_ID of a new deal: a funnel that does not exist means the default one (CCrmDeal::Add)."""
    try:
        category_id = int(str(value).strip())
    except ValueError:
        return DEFAULT_CATEGORY_ID
    known = category_id in world.categories and entity_type_of(world, category_id) == DEAL_ENTITY_TYPE_ID
    return category_id if known else DEFAULT_CATEGORY_ID


def next_status_row_id(world: World) -> int:
    # The cloud's database steps auto-increment ids by 2 (101, 103 ... in the docs' crm.status.list example).
    return max((int(row["ID"]) for row in world.statuses), default=99) + 2


def create_category(
    world: World, name: str, sort: int, now: float, entity_type_id: int = DEAL_ENTITY_TYPE_ID, is_default: bool = False
) -> dict[str, Any]:
    """A new funnel with its entity type's stock stages under its prefix (crm.status.* then shapes them).

    A deal funnel shows ``originId``/``originatorId`` (docs crm-category-add.md: "exists only in deals"); a
    smart-process funnel the five keys of the docs' smart-process examples.
    """
    category_id = world.next_id(CATEGORY_COUNTER)
    category: dict[str, Any] = {
        "id": category_id,
        "name": name,
        "sort": sort,
        "entityTypeId": entity_type_id,
        "isDefault": "Y" if is_default else "N",
    }
    if entity_type_id == DEAL_ENTITY_TYPE_ID:
        category.update(originId="", originatorId="", created=now)
    world.categories[category_id] = category
    stock = _STOCK_STAGES if entity_type_id == DEAL_ENTITY_TYPE_ID else stock_spa_stages()
    for position, stage in enumerate(copy.deepcopy(stock), start=1):
        add_stage(world, category_id, stage, default_sort=10 * position)
    return category


def add_stage(world: World, category_id: int, fields: dict[str, Any], default_sort: int = 500) -> dict[str, Any]:
    """One stage row of a funnel; the funnel prefix is added to STATUS_ID unless it is already there."""
    status_id = prefixed(world, category_id, str(fields["STATUS_ID"]))
    semantic = str(fields.get("SEMANTICS") or "").upper()
    semantic = semantic if semantic in ("S", "F") else ""
    color = fields.get("COLOR")
    deal = entity_type_of(world, category_id) == DEAL_ENTITY_TYPE_ID
    row = {
        "ID": str(next_status_row_id(world)),
        "ENTITY_ID": stage_entity_id(world, category_id),
        "STATUS_ID": status_id,
        "NAME": str(fields.get("NAME") or status_id),
        "NAME_INIT": str(fields.get("NAME_INIT") or ""),
        "SORT": str(int(fields.get("SORT") or default_sort)),
        "SYSTEM": str(fields.get("SYSTEM") or "N"),
        "CATEGORY_ID": None if deal and category_id == DEFAULT_CATEGORY_ID else str(category_id),
        "COLOR": color,
        "SEMANTICS": semantic or None,
    }
    if deal:
        # A copied stock stage keeps its own EXTRA semantics (APOLOGY is "apology"); a new one is named after its
        # group. Smart-process stages have no EXTRA (docs tutorial how-to-get-stages-with-semantics.md).
        own = (fields.get("EXTRA") or {}).get("SEMANTICS")
        extra = own or {"S": "success", "F": "failure"}.get(semantic, "process")
        row["EXTRA"] = {"SEMANTICS": extra, "COLOR": color}
    world.statuses.append(row)
    return row


def delete_category(world: World, category_id: int) -> None:
    """The funnel and its stage list."""
    entity_id = stage_entity_id(world, category_id)
    world.statuses[:] = [row for row in world.statuses if row["ENTITY_ID"] != entity_id]
    del world.categories[category_id]


def category_view(category: dict[str, Any]) -> dict[str, Any]:
    """A funnel as crm.category.* shows it (docs crm-category-add.md ``category`` object)."""
    return {k: v for k, v in category.items() if k != "created"}
