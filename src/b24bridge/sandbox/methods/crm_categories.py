"""Funnels: ``crm.category.*`` for deals (entityTypeId 2) and smart processes (docs
api-reference/crm/universal/category/*.md) and the deprecated ``crm.dealcategory.*`` readers (docs
api-reference/crm/outdated/category-old/*.md).

A smart process's funnels can be listed and read always; adding, changing and deleting them takes
``isCategoriesEnabled`` (docs tutorial how-to-add-category-to-spa.md: ``ENTITY_TYPE_NOT_SUPPORTED`` otherwise).
[inferred] that listing and reading still work with funnels off (the default funnel holds the items either way).
"""

from __future__ import annotations

from typing import Any

from .. import crm_categories as funnels
from .. import crm_types as types
from ..crm_categories import DEAL_ENTITY_TYPE_ID, DEFAULT_CATEGORY_ID, category_view
from ..errors import RestError, legacy
from ..registry import Call, Page, rest_method
from ..wire import iso

_TYPE_NAMES = {1: "LEAD", 3: "CONTACT", 4: "COMPANY"}
# crm.category.fields (docs crm-category-fields.md): name -> (type, title, required, read-only); the last two are
# the deals' only ("exists only in deals").
_FIELDS: dict[str, tuple[str, str, bool, bool]] = {
    "id": ("integer", "ID", False, True),
    "name": ("string", "NAME", False, False),
    "sort": ("integer", "SORT", False, False),
    "entityTypeId": ("integer", "ENTITY_TYPE_ID", True, True),
    "isDefault": ("boolean", "IS_DEFAULT", False, True),
    "originId": ("string", "ORIGIN_ID", False, False),
    "originatorId": ("string", "ORIGINATOR_ID", False, False),
}
_DEAL_ONLY_FIELDS = ("originId", "originatorId")


def _unsupported(name: str) -> RestError:
    return RestError("ENTITY_TYPE_NOT_SUPPORTED", f"Entity type `{name}` is not supported")


def _entity_type(call: Call, editing: bool = False) -> int:
    """The entityTypeId whose funnels are meant: deals, or a smart process (with funnels on, to change them)."""
    try:
        entity_type = int(str(call.param("entitytypeid")).strip())
    except ValueError:
        entity_type = 0
    if entity_type == DEAL_ENTITY_TYPE_ID:
        return entity_type
    if entity_type in _TYPE_NAMES:  # [inferred] client funnels of contacts/companies are not emulated
        raise _unsupported(_TYPE_NAMES[entity_type])
    spa = types.by_entity_type(call.world, entity_type)
    if spa is None:
        raise RestError("NOT_FOUND", "Smart process not found")
    if editing and not types.enabled(spa, "isCategoriesEnabled"):
        raise _unsupported(funnels.dynamic_entity(entity_type))
    return entity_type


def _category(call: Call, editing: bool = False) -> dict[str, Any]:
    entity_type = _entity_type(call, editing)
    try:
        category_id = int(str(call.param("id")).strip())
    except ValueError:
        category_id = -1
    category = call.world.categories.get(category_id)
    if category is None or int(category["entityTypeId"]) != entity_type:
        raise RestError("NOT_FOUND", "Element not found")
    return category


def _fields(call: Call) -> dict[str, Any]:
    fields = call.param("fields")
    if not isinstance(fields, dict):
        raise RestError(0, "Field 'NAME' is required")  # [inferred] no fields at all is no name either
    return fields


def _sort(value: Any, default: int) -> int:
    """docs: a negative sort is set to 0."""
    try:
        return max(0, int(str(value).strip()))
    except ValueError:
        return default


def _ordered(call: Call) -> list[dict[str, Any]]:
    return funnels.categories_of(call.world, DEAL_ENTITY_TYPE_ID)


def _make_default(call: Call, category: dict[str, Any], value: Any) -> None:
    """docs crm-category-add.md: a smart-process funnel given ``isDefault: Y`` takes over from the old default one;
    the default funnel cannot be made non-default; deal funnels ignore the flag."""
    if int(category["entityTypeId"]) == DEAL_ENTITY_TYPE_ID or str(value).strip().upper() != "Y":
        return
    for other in funnels.categories_of(call.world, int(category["entityTypeId"])):
        other["isDefault"] = "N"
    category["isDefault"] = "Y"


@rest_method("crm.category.list", "crm")
def category_list(call: Call) -> Any:
    categories = [category_view(c) for c in funnels.categories_of(call.world, _entity_type(call))]
    return Page({"categories": categories}, total=len(categories))  # docs: {"categories": [...]}, "total": N


@rest_method("crm.category.get", "crm")
def category_get(call: Call) -> Any:
    return {"category": category_view(_category(call))}


@rest_method("crm.category.add", "crm")
def category_add(call: Call) -> Any:
    entity_type = _entity_type(call, editing=True)
    fields = _fields(call)
    name = str(fields.get("name") or "").strip()
    if not name:
        raise RestError(0, "Field 'NAME' is required")
    sort = _sort(fields.get("sort"), 500)
    category = funnels.create_category(call.world, name, sort, call.sandbox.now(), entity_type)
    _make_default(call, category, fields.get("isDefault"))
    return {"category": category_view(category)}


@rest_method("crm.category.update", "crm")
def category_update(call: Call) -> Any:
    category = _category(call, editing=True)
    fields = call.param("fields")
    if isinstance(fields, dict):
        if str(fields.get("name") or "").strip():
            category["name"] = str(fields["name"]).strip()
        if "sort" in fields:
            category["sort"] = _sort(fields["sort"], int(category["sort"]))
        _make_default(call, category, fields.get("isDefault"))  # docs: isDefault of deal funnels cannot change
    return {"category": category_view(category)}


@rest_method("crm.category.delete", "crm")
def category_delete(call: Call) -> Any:
    category = _category(call, editing=True)
    world = call.world
    deal = int(category["entityTypeId"]) == DEAL_ENTITY_TYPE_ID
    if deal and category["id"] == DEFAULT_CATEGORY_ID:
        raise RestError(0, "Default deal category cannot be deleted")
    if not deal and category["isDefault"] == "Y":
        raise RestError("BX_ERROR", "This funnel is the default funnel")
    owner = funnels.owner_entity(world, int(category["id"]))
    if any(int(d.get("CATEGORY_ID") or 0) == category["id"] for d in world.records(owner).values()):
        if deal:
            raise RestError(0, f"Deals related to the funnel `{category['name']}` found")
        raise RestError("BX_ERROR", "Elements related to the funnel found")
    funnels.delete_category(world, int(category["id"]))
    return None  # docs: "result": null


@rest_method("crm.category.fields", "crm")
def category_fields(call: Call) -> Any:
    deal = _entity_type(call) == DEAL_ENTITY_TYPE_ID
    return {"fields": {
        name: {"type": kind, "isRequired": required, "isReadOnly": read_only, "isImmutable": False,
               "isMultiple": False, "isDynamic": False, "title": title, "upperName": title}
        for name, (kind, title, required, read_only) in _FIELDS.items() if deal or name not in _DEAL_ONLY_FIELDS
    }}  # fmt: skip


# --- deprecated crm.dealcategory.* ----------------------------------------------------------------------------


def _legacy_view(call: Call, category: dict[str, Any]) -> dict[str, Any]:
    """[inferred] the shape crm.dealcategory.fields describes: ID, CREATED_DATE, NAME, IS_LOCKED, SORT."""
    created = category.get("created")
    return {
        "ID": str(category["id"]),
        "CREATED_DATE": iso(float(created), call.sandbox.tz) if created is not None else "",
        "NAME": category["name"],
        "IS_LOCKED": "N",
        "SORT": str(category["sort"]),
    }


def _legacy_id(call: Call) -> int:
    try:
        category_id = int(str(call.param("id")).strip())
    except ValueError:
        category_id = -1
    if category_id < 0:
        raise legacy("The parameter id is invalid or not defined.")  # [inferred] the productrows wording
    category = call.world.categories.get(category_id)
    if category is None or int(category["entityTypeId"]) != DEAL_ENTITY_TYPE_ID:
        raise legacy("Not found")
    return category_id


@rest_method("crm.dealcategory.list", "crm")
def dealcategory_list(call: Call) -> Any:
    # [inferred] the default funnel is not a row of the legacy table, so it is not listed.
    rows = [_legacy_view(call, c) for c in _ordered(call) if c["id"] != DEFAULT_CATEGORY_ID]
    return Page(rows, total=len(rows))


@rest_method("crm.dealcategory.get", "crm")
def dealcategory_get(call: Call) -> Any:
    return _legacy_view(call, call.world.categories[_legacy_id(call)])


@rest_method("crm.dealcategory.add", "crm")
def dealcategory_add(call: Call) -> Any:
    fields = call.param("fields")
    if not isinstance(fields, dict):
        raise legacy("Parameter 'fields' must be array.")
    upper = {str(k).upper(): v for k, v in fields.items()}
    name = str(upper.get("NAME") or "").strip()
    if not name:
        raise legacy("The field NAME is required.")  # [inferred] NAME is the one required field (dealcategory.fields)
    return funnels.create_category(call.world, name, _sort(upper.get("SORT"), 500), call.sandbox.now())["id"]


@rest_method("crm.dealcategory.status", "crm")
def dealcategory_status(call: Call) -> Any:
    return funnels.stage_entity_id(call.world, _legacy_id(call))  # docs: "DEAL_STAGE_[id]"


@rest_method("crm.dealcategory.stage.list", "crm")
def dealcategory_stage_list(call: Call) -> Any:
    """docs: the same as crm.status.list with ENTITY_ID = crm.dealcategory.status of the funnel."""
    return funnels.stages(call.world, _legacy_id(call))
