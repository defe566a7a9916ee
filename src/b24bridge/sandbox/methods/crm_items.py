"""``crm.item.{add,get,list,update,delete,fields}`` for smart processes (docs
api-reference/crm/universal/crm-item-*.md).

Errors carry real codes, HTTP 400 (REFERENCE 6.7): ``NOT_FOUND`` "Smart process not found" for an unknown
entityTypeId, ``NOT_FOUND`` "Item not found" for an unknown id (the get/delete pages' error tables; the get page's
JSON example says "Element not found"), ``CRM_FIELD_ERROR_VALUE_NOT_VALID``, ``100`` for a scalar in a multiple
field, ``INVALID_ARG_VALUE`` for a bad filter or order.

Leads, deals, contacts and companies (entityTypeId 1-4) are served by their legacy methods only: ``crm.item.*`` on
them answers ``ENTITY_TYPE_NOT_SUPPORTED`` (a documented deviation: a real portal serves them here too).
"""

from __future__ import annotations

from typing import Any

from .. import crm_categories as funnels
from .. import crm_items as items
from .. import crm_types as types
from ..crm_query import camel_order, page_of, parse_tree, sort_rows, tree_matcher
from ..errors import RestError
from ..registry import Call, Page, rest_method

_SANDBOX_ONLY = {1: "LEAD", 2: "DEAL", 3: "CONTACT", 4: "COMPANY", 7: "QUOTE", 31: "SMART_INVOICE"}


def _spa(call: Call) -> dict[str, Any]:
    try:
        entity_type_id = int(str(call.param("entitytypeid")).strip())
    except ValueError:
        entity_type_id = 0
    if entity_type_id == 5:  # docs crm/universal/index.md
        raise RestError("ENTITY_TYPE_NOT_SUPPORTED", "Entity type `INVOICE` is not supported")
    if entity_type_id in _SANDBOX_ONLY:
        raise RestError(
            "ENTITY_TYPE_NOT_SUPPORTED",
            f"Entity type `{_SANDBOX_ONLY[entity_type_id]}` is not supported: the sandbox serves crm.item.* for "
            "smart processes only (use the crm.lead/deal/contact/company.* methods)",
        )
    spa = types.by_entity_type(call.world, entity_type_id)
    if spa is None:
        raise RestError("NOT_FOUND", "Smart process not found")
    return spa


def _records(call: Call, spa: dict[str, Any]) -> dict[int, dict[str, Any]]:
    return call.world.records(funnels.dynamic_entity(int(spa["entityTypeId"])))


def _item_id(call: Call) -> int:
    raw = call.param("id")
    if raw in (None, ""):
        raise RestError(100, "Could not find value for parameter {id}")  # [inferred] like the missing {fields}
    try:
        return int(str(raw).strip())
    except ValueError:
        return 0


def _item(call: Call, spa: dict[str, Any]) -> dict[str, Any]:
    record = _records(call, spa).get(_item_id(call))
    if record is None:
        raise RestError("NOT_FOUND", "Item not found")
    return record


def _fields(call: Call) -> dict[str, Any]:
    fields = call.map_param("fields")
    if fields is None:
        raise RestError(100, "Could not find value for parameter {fields}")  # [inferred] as crm.type.add
    return fields


def _original_uf(call: Call) -> bool:
    return str(call.param("useoriginalufnames") or "").strip().upper() == "Y"


def _answer(call: Call, spa: dict[str, Any], record: dict[str, Any]) -> dict[str, Any]:
    return {"item": items.view(call, spa, record, _original_uf(call))}


def _changed(call: Call, spa: dict[str, Any], action: Any, record_id: int, before: Any, after: Any) -> None:
    entity = funnels.dynamic_entity(int(spa["entityTypeId"]))
    call.sandbox.crm_changed(entity, action, record_id, before, after, actor_user_id=call.caller.user_id)


@rest_method("crm.item.add", "crm")
def item_add(call: Call) -> Any:
    spa = _spa(call)
    staged = items.staged_values(call, spa, _fields(call))
    entity = funnels.dynamic_entity(int(spa["entityTypeId"]))
    # Checked in full before the item takes its id, so a refused add leaves no gap in the sequence.
    record: dict[str, Any] = {"ID": call.world.counters.get(entity, 0) + 1}
    items.apply(call, spa, record, staged, creating=True)
    record["ID"] = call.world.next_id(entity)
    _records(call, spa)[record["ID"]] = record
    _changed(call, spa, "ADD", record["ID"], None, dict(record))
    return _answer(call, spa, record)


@rest_method("crm.item.get", "crm")
def item_get(call: Call) -> Any:
    spa = _spa(call)
    return _answer(call, spa, _item(call, spa))


@rest_method("crm.item.update", "crm")
def item_update(call: Call) -> Any:
    spa = _spa(call)
    record = _item(call, spa)
    staged = items.staged_values(call, spa, _fields(call))
    working = dict(record)
    items.apply(call, spa, working, staged, creating=False)
    if items.changed(record, working):
        before = dict(record)
        record.clear()
        record.update(working)
        _changed(call, spa, "UPDATE", record["ID"], before, dict(record))
    return _answer(call, spa, record)


@rest_method("crm.item.delete", "crm")
def item_delete(call: Call) -> Any:
    spa = _spa(call)
    record = _item(call, spa)
    del _records(call, spa)[record["ID"]]
    _changed(call, spa, "DELETE", record["ID"], record, None)
    return []  # docs: "result": []


@rest_method("crm.item.list", "crm")
def item_list(call: Call) -> Any:
    spa = _spa(call)
    tz = call.sandbox.tz
    resolve = items.resolver(call.world, spa)
    tree = parse_tree(call.param("filter"), resolve, tz)
    test = tree_matcher(tree, {f.name: f for f in items.fields_of(call.world, spa)}, tz)
    order = camel_order(call.param("order"), resolve)
    rows = sort_rows([r for r in _records(call, spa).values() if test(r)], order, name_of=str)
    page, total, nxt = page_of(rows, call.param("start"))
    original, wanted = _original_uf(call), call.param("select")
    found = [items.select(items.view(call, spa, r, original), wanted) for r in page]
    return Page({"items": found}, total, nxt)


@rest_method("crm.item.fields", "crm")
def item_fields(call: Call) -> Any:
    spa = _spa(call)
    return {"fields": items.describe(call.world, spa, _original_uf(call))}
