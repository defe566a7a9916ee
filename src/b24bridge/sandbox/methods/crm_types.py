"""Smart processes: ``crm.type.{add,get,getByEntityTypeId,list,update,delete}`` (docs
api-reference/crm/universal/user-defined-object-types/*.md).

Errors are each page's own: ``crm.type.get``/``update`` answer an unknown id with ``0`` "SPA not found",
``crm.type.getByEntityTypeId``/``delete`` with ``0`` "Smart process not found" (the pages' JSON examples).
"""

from __future__ import annotations

from typing import Any

from .. import crm_types as types
from ..crm_query import camel_order, page_of, parse_tree, sort_rows, tree_matcher
from ..errors import RestError
from ..registry import Call, Page, rest_method


def _fields(call: Call) -> dict[str, Any]:
    fields = call.param("fields")
    if not isinstance(fields, dict):
        raise RestError(100, "Could not find value for parameter {fields}")  # docs crm-type-add.md
    return fields


def _by_id(call: Call, missing: str) -> dict[str, Any]:
    try:
        type_id = int(str(call.param("id")).strip())
    except ValueError:
        type_id = 0
    spa = call.world.spa_types.get(type_id)
    if spa is None:
        raise RestError(0, missing)
    return spa


def _admin(call: Call) -> None:
    """docs: adding, listing, changing and deleting types takes CRM administrator rights (400 ``ACCESS_DENIED``)."""
    user = call.world.users.get(call.caller.user_id)
    if user is None or not user.admin:
        raise RestError("ACCESS_DENIED", "Access denied")


def _answer(call: Call, spa: dict[str, Any]) -> dict[str, Any]:
    return {"type": types.view(call.world, spa, call.sandbox.tz)}


@rest_method("crm.type.add", "crm")
def type_add(call: Call) -> Any:
    _admin(call)
    spa = types.create(call.world, _fields(call), call.caller.user_id, call.sandbox.now())
    return _answer(call, spa)


@rest_method("crm.type.get", "crm")
def type_get(call: Call) -> Any:
    return _answer(call, _by_id(call, "SPA not found"))


@rest_method("crm.type.getbyentitytypeid", "crm")
def type_get_by_entity_type_id(call: Call) -> Any:
    try:
        entity_type_id = int(str(call.param("entitytypeid")).strip())
    except ValueError:
        entity_type_id = 0
    spa = types.by_entity_type(call.world, entity_type_id)
    if spa is None:
        raise RestError(0, "Smart process not found")
    return _answer(call, spa)


@rest_method("crm.type.list", "crm")
def type_list(call: Call) -> Any:
    _admin(call)
    tz = call.sandbox.tz
    test = tree_matcher(parse_tree(call.param("filter"), types.FIELDS.get, tz), types.FIELDS, tz)
    rows = [spa for spa in call.world.spa_types.values() if test(spa)]
    ordered = sort_rows(rows, camel_order(call.param("order"), types.FIELDS.get), id_key="id", name_of=str)
    page, total, nxt = page_of(ordered, call.param("start"))
    return Page({"types": [types.view(call.world, spa, tz, full=False) for spa in page]}, total, nxt)


@rest_method("crm.type.update", "crm")
def type_update(call: Call) -> Any:
    _admin(call)
    spa = _by_id(call, "SPA not found")
    fields = call.param("fields")
    types.update(call.world, spa, fields if isinstance(fields, dict) else {}, call.caller.user_id, call.sandbox.now())
    return _answer(call, spa)


@rest_method("crm.type.delete", "crm")
def type_delete(call: Call) -> Any:
    _admin(call)
    types.delete(call.world, _by_id(call, "Smart process not found"))
    return []  # docs: "result": []
