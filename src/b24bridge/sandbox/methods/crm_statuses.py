"""``crm.status.*``: reference lists, the stages of every deal and smart-process funnel included (docs
api-reference/crm/status/*.md).

Errors are the docs' own; several of these pages show the error text in ``error`` and an explanation in
``error_description`` (crm-status-get.md, crm-status-update.md), and that is what goes out.
"""

from __future__ import annotations

from typing import Any

from .. import crm_categories as funnels
from ..crm_query import page_of, sort_rows
from ..crm_statuses import LEAD_STATUS_ENTITY
from ..errors import RestError, legacy
from ..registry import Call, Page, rest_method
from ..state import World

_E_AFTER_FINAL = (
    "Cannot create more stages after the final stage because the final successful stage already exists. "
    "Try using sort order values less than that of the final stage."
)
_FIELDS: list[tuple[str, str, str, str]] = [
    # name, type, title, flags (R required, O read-only, I immutable) as docs crm-status-fields.md lists them
    ("ID", "integer", "ID", "O"),
    ("ENTITY_ID", "string", "Entity ID", "RI"),
    ("STATUS_ID", "string", "Status", "RI"),
    ("SORT", "integer", "Sorting", ""),
    ("NAME", "string", "Name", "R"),
    ("NAME_INIT", "string", "Default Name", "O"),
    ("SYSTEM", "char", "System", "O"),
    ("CATEGORY_ID", "integer", "CATEGORY_ID", "I"),
    ("COLOR", "string", "COLOR", ""),
    ("SEMANTICS", "char", "SEMANTICS", "I"),
    ("EXTRA", "crm_status_extra", "Additional Fields", ""),
]


def _row_id(call: Call, invalid: RestError) -> int:
    raw = call.param("id")
    try:
        value = int(str(raw).strip())
    except ValueError:
        value = 0
    if value <= 0:
        raise invalid
    return value


def _find(world: World, row_id: int, missing: RestError) -> dict[str, Any]:
    row = next((r for r in world.statuses if int(r["ID"]) == row_id), None)
    if row is None:
        raise missing
    return row


def _not_found(description: str = "Element not found.") -> RestError:
    return RestError("Status is not found.", description)


def _invalid_id(description: str = "An invalid identifier was passed.") -> RestError:
    return RestError("Invalid identifier.", description)


@rest_method("crm.status.list", "crm")
def status_list(call: Call) -> Any:
    flt = call.param("filter") or {}
    if not isinstance(flt, dict):
        flt = {}
    wanted = {str(k).upper().lstrip("="): str(v) for k, v in flt.items()}
    rows = [r for r in call.world.statuses if all(str(r.get(k)) == v for k, v in wanted.items())]
    order = call.param("order") or {"SORT": "ASC"}
    ordered = sort_rows([{**r, "ID": int(r["ID"]), "SORT": int(r["SORT"])} for r in rows], order)
    page, total, nxt = page_of(
        [{**r, "ID": str(r["ID"]), "SORT": str(r["SORT"])} for r in ordered], call.param("start")
    )
    return Page(page, total, nxt)


@rest_method("crm.status.get", "crm")
def status_get(call: Call) -> Any:
    missing = _not_found("Directory item not found.")
    row = _find(call.world, _row_id(call, missing), missing)
    return {k: v for k, v in row.items() if k != "EXTRA"}  # docs: get shows no EXTRA


@rest_method("crm.status.entity.items", "crm")
def status_entity_items(call: Call) -> Any:
    entity_id = str(call.param("entityid") or "").strip()
    if not entity_id:
        raise RestError(
            "The parameter entityId is not defined or invalid.", "The directory ID is not specified or is incorrect."
        )
    rows = [r for r in call.world.statuses if r["ENTITY_ID"] == entity_id]
    rows.sort(key=lambda r: (int(r["SORT"]), int(r["ID"])))
    return [{"NAME": r["NAME"], "SORT": int(r["SORT"]), "STATUS_ID": r["STATUS_ID"]} for r in rows]


@rest_method("crm.status.fields", "crm")
def status_fields(call: Call) -> Any:
    return {
        name: {"type": kind, "isRequired": "R" in flags, "isReadOnly": "O" in flags, "isImmutable": "I" in flags,
               "isMultiple": False, "isDynamic": False, "title": title}
        for name, kind, title, flags in _FIELDS
    }  # fmt: skip


def _fields(call: Call) -> dict[str, Any]:
    fields = call.param("fields")
    if not isinstance(fields, dict):
        raise legacy("Parameter 'fields' must be array.")
    return {str(k).upper(): v for k, v in fields.items()}


@rest_method("crm.status.add", "crm")
def status_add(call: Call) -> Any:
    fields = _fields(call)
    world = call.world
    missing = [f"The field {name} is required." for name in ("ENTITY_ID", "STATUS_ID") if not fields.get(name)]
    if missing:
        raise legacy("<br>".join(missing))  # [inferred] separator: the docs only say both arrive in one response
    entity_id = str(fields["ENTITY_ID"])
    known = {r["ENTITY_ID"] for r in world.statuses} | {funnels.stage_entity_id(world, c) for c in world.categories}
    if entity_id not in known:
        raise legacy("Specified entity type is not supported.")
    if not fields.get("NAME"):
        raise legacy("The field Title is required.")
    category = funnels.category_of_entity_id(world, entity_id)
    status_id = str(fields["STATUS_ID"])
    if category is not None:
        status_id = funnels.prefixed(world, category, status_id)
    if any(r["ENTITY_ID"] == entity_id and r["STATUS_ID"] == status_id for r in world.statuses):
        raise RestError("ERROR_CORE", "The specified status ID already exists.")
    if category is not None:
        _check_before_final(world, category, fields)
        return int(funnels.add_stage(world, category, {**fields, "STATUS_ID": status_id})["ID"])
    row_id = funnels.next_status_row_id(world)
    row: dict[str, Any] = {
        "ID": str(row_id), "ENTITY_ID": entity_id, "STATUS_ID": status_id,
        "NAME": str(fields["NAME"]), "NAME_INIT": "", "SORT": str(int(fields.get("SORT") or 500)), "SYSTEM": "N",
        "CATEGORY_ID": None, "COLOR": fields.get("COLOR"), "SEMANTICS": None,
    }  # fmt: skip
    if entity_id == LEAD_STATUS_ENTITY:
        # Lead stages carry semantics and EXTRA like deal stages (tutorial how-to-get-stages-with-semantics.md).
        semantic = str(fields.get("SEMANTICS") or "").upper()
        row["SEMANTICS"] = semantic if semantic in ("S", "F") else None
        extra = {"S": "success", "F": "failure"}.get(semantic, "process")
        row["EXTRA"] = {"SEMANTICS": extra, "COLOR": row["COLOR"]}
    world.statuses.append(row)
    return row_id


def _check_before_final(world: World, category: int, fields: dict[str, Any]) -> None:
    """A stage "in progress" must sort before the funnel's success stage (docs crm-status-add.md)."""
    if str(fields.get("SEMANTICS") or "").upper() in ("S", "F"):
        return
    success = [int(r["SORT"]) for r in funnels.stages(world, category) if funnels.semantics(r) == "S"]
    if success and int(fields.get("SORT") or 500) > min(success):
        raise legacy(_E_AFTER_FINAL)


@rest_method("crm.status.update", "crm")
def status_update(call: Call) -> Any:
    row = _find(call.world, _row_id(call, _invalid_id("An incorrect identifier was passed.")), _not_found())
    fields = _fields(call)
    for name in ("NAME", "SORT", "COLOR"):  # docs: the fields update can change
        if name in fields:
            row[name] = str(int(fields[name])) if name == "SORT" else fields[name]
    if "COLOR" in fields and "EXTRA" in row:
        row["EXTRA"]["COLOR"] = fields["COLOR"]
    return True


@rest_method("crm.status.delete", "crm")
def status_delete(call: Call) -> Any:
    world = call.world
    row = _find(world, _row_id(call, _invalid_id()), _not_found())
    params = call.param("params")
    forced = isinstance(params, dict) and str(params.get("FORCED", params.get("forced", ""))).upper() == "Y"
    if row["SYSTEM"] == "Y" and not forced:
        raise legacy('CRM System Status can be deleted only if parameter FORCED is specified and equal to "Y".')
    category = funnels.category_of_entity_id(world, row["ENTITY_ID"])
    if category is not None and any(
        d.get("STAGE_ID") == row["STATUS_ID"] and int(d.get("CATEGORY_ID") or 0) == category
        for d in world.records(funnels.owner_entity(world, category)).values()
    ):
        raise legacy("There are active items in this status.")
    # [inferred] a lead stage holding leads is refused the same way.
    leads = world.records("LEAD").values() if row["ENTITY_ID"] == LEAD_STATUS_ENTITY else []
    if any(lead.get("STATUS_ID") == row["STATUS_ID"] for lead in leads):
        raise legacy("There are active items in this status.")
    world.statuses.remove(row)
    return True
