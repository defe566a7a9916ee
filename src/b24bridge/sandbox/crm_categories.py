"""Deal funnels (categories) and their stages, kept in the world as the portal keeps them.

A funnel's stages are the rows of its reference list: ``DEAL_STAGE`` for the default funnel 0, ``DEAL_STAGE_{id}``
for the others, whose stage ids carry the prefix ``C{id}:`` (docs crm/deals/index.md, crm-status-add.md). A new
funnel gets a copy of the stock stage set under its prefix, codes cut to 21 characters (docs tutorial
how-to-get-elements-by-stage-filter.md shows ``C10:PREPAYMENT_INVOIC``).

Which stage a deal ends up in follows the CRM's stage field (``Bitrix\\Crm\\Field\\Stage::processLogic``, newest copy
read in public source): a stage of the deal's own funnel is taken as given; on an update any other stage is ignored
and the deal keeps its stage; on a new deal it is replaced by the funnel's first stage of the same semantics (P/S/F),
an unknown stage counting as "in progress". No error either way. [inferred: that crm.deal.* goes through this layer
on today's cloud; the legacy CCrmDeal path stored an unknown stage with an empty semantic id]
"""

from __future__ import annotations

import copy
from typing import Any

from .crm_statuses import stock_statuses
from .state import World

DEAL_ENTITY_TYPE_ID = 2
DEFAULT_CATEGORY_ID = 0
STATUS_ID_LIMIT = 21
# The stock stage set a new funnel is created with: the default funnel's stages as a new portal has them.
_STOCK_ENTITY = "DEAL_STAGE"
# A new funnel's stages: those of a new portal's default funnel, whatever was done to that one since.
_STOCK_STAGES = [row for row in stock_statuses() if row["ENTITY_ID"] == _STOCK_ENTITY]


def stage_entity_id(category_id: int) -> str:
    return _STOCK_ENTITY if category_id == DEFAULT_CATEGORY_ID else f"{_STOCK_ENTITY}_{category_id}"


def stage_prefix(category_id: int) -> str:
    return "" if category_id == DEFAULT_CATEGORY_ID else f"C{category_id}:"


def category_of_entity_id(world: World, entity_id: str) -> int | None:
    """``DEAL_STAGE`` → 0, ``DEAL_STAGE_5`` → 5 when funnel 5 exists; None for any other list."""
    if entity_id == _STOCK_ENTITY:
        return DEFAULT_CATEGORY_ID
    head, _, tail = entity_id.rpartition("_")
    if head == _STOCK_ENTITY and tail.isdigit() and int(tail) in world.categories and int(tail) > 0:
        return int(tail)
    return None


def _sorted(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return sorted(rows, key=lambda row: (int(row["SORT"]), int(row["ID"])))


def stages(world: World, category_id: int) -> list[dict[str, Any]]:
    entity_id = stage_entity_id(category_id)
    return _sorted([row for row in world.statuses if row["ENTITY_ID"] == entity_id])


def find_stage(world: World, category_id: int, stage_id: str) -> dict[str, Any] | None:
    return next((row for row in stages(world, category_id) if row["STATUS_ID"] == stage_id), None)


def semantics(row: dict[str, Any] | None) -> str:
    """P (in progress), S (success) or F (failure): crm.status.list's SEMANTICS, empty meaning in progress."""
    return str(row.get("SEMANTICS") or "P") if row is not None else "P"


def start_stage(world: World, category_id: int) -> str | None:
    rows = stages(world, category_id)
    return str(rows[0]["STATUS_ID"]) if rows else None


def _any_deal_stage(world: World, stage_id: str) -> dict[str, Any] | None:
    for category_id in world.categories:
        row = find_stage(world, category_id, stage_id)
        if row is not None:
            return row
    return None


def resolve_stage(world: World, category_id: int, wanted: str | None, current: str | None) -> str | None:
    """The stage a deal of ``category_id`` really gets when ``wanted`` is written (see the module docstring)."""
    if wanted and find_stage(world, category_id, wanted) is not None:
        return wanted
    if current is not None:
        return current
    wanted_semantics = semantics(_any_deal_stage(world, wanted)) if wanted else "P"
    for row in stages(world, category_id):
        if semantics(row) == wanted_semantics:
            return str(row["STATUS_ID"])
    return start_stage(world, category_id)


def existing_category(world: World, value: Any) -> int:
    """CATEGORY_ID of a new deal: a funnel that does not exist means the default one (CCrmDeal::Add)."""
    try:
        category_id = int(str(value).strip())
    except ValueError:
        return DEFAULT_CATEGORY_ID
    return category_id if category_id in world.categories else DEFAULT_CATEGORY_ID


def next_status_row_id(world: World) -> int:
    # The cloud's database steps auto-increment ids by 2 (101, 103 ... in the docs' crm.status.list example).
    return max((int(row["ID"]) for row in world.statuses), default=99) + 2


def create_category(world: World, name: str, sort: int, now: float) -> dict[str, Any]:
    """A new deal funnel with the stock stages under its prefix (crm.status.* then shapes them)."""
    category_id = world.next_id("deal_category")
    category = {
        "id": category_id,
        "name": name,
        "sort": sort,
        "entityTypeId": DEAL_ENTITY_TYPE_ID,
        "isDefault": "N",
        "originId": "",
        "originatorId": "",
        "created": now,
    }
    world.categories[category_id] = category
    for position, stage in enumerate(copy.deepcopy(_STOCK_STAGES), start=1):
        add_stage(world, category_id, stage, default_sort=10 * position)
    return category


def add_stage(world: World, category_id: int, fields: dict[str, Any], default_sort: int = 500) -> dict[str, Any]:
    """One stage row of a funnel; the funnel prefix is added to STATUS_ID unless it is already there."""
    prefix = stage_prefix(category_id)
    status_id = str(fields["STATUS_ID"])
    if prefix and not status_id.startswith(prefix):
        status_id = (prefix + status_id)[:STATUS_ID_LIMIT]
    semantic = str(fields.get("SEMANTICS") or "").upper()
    semantic = semantic if semantic in ("S", "F") else ""
    color = fields.get("COLOR")
    # A copied stock stage keeps its own EXTRA semantics (APOLOGY is "apology"); a new one is named after its group.
    extra = (fields.get("EXTRA") or {}).get("SEMANTICS") or {"S": "success", "F": "failure"}.get(semantic, "process")
    row = {
        "ID": str(next_status_row_id(world)),
        "ENTITY_ID": stage_entity_id(category_id),
        "STATUS_ID": status_id,
        "NAME": str(fields.get("NAME") or status_id),
        "NAME_INIT": str(fields.get("NAME_INIT") or ""),
        "SORT": str(int(fields.get("SORT") or default_sort)),
        "SYSTEM": str(fields.get("SYSTEM") or "N"),
        "CATEGORY_ID": None if category_id == DEFAULT_CATEGORY_ID else str(category_id),
        "COLOR": color,
        "SEMANTICS": semantic or None,
        "EXTRA": {"SEMANTICS": extra, "COLOR": color},
    }
    world.statuses.append(row)
    return row


def category_view(category: dict[str, Any]) -> dict[str, Any]:
    """A funnel as crm.category.* shows it (docs crm-category-add.md ``category`` object)."""
    return {k: v for k, v in category.items() if k != "created"}
