"""``crm.{deal,contact,company,lead}.userfield.{add,get,list,update,delete}`` (docs crm-*-userfield-*.md).

Errors are the docs': legacy ones with an empty code, ``ERROR_CORE`` for field-name and list problems,
``ERROR_NOT_FOUND`` for an unknown id. A field of another entity is "Access denied." to these methods.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from .. import crm_userfields as uf
from ..crm_query import sort_rows
from ..errors import RestError, legacy
from ..registry import Call, rest_method
from ..state import World
from .crm import record_id

# The keys of a field as get/list show them, in the docs' order (labels and LIST come after).
_VIEW_KEYS = ("ENTITY_ID", "FIELD_NAME", "USER_TYPE_ID", "XML_ID", "SORT", "MULTIPLE", "MANDATORY", "SHOW_FILTER",
              "SHOW_IN_LIST", "EDIT_IN_LIST", "IS_SEARCHABLE", "SETTINGS")  # fmt: skip
_UPDATABLE = ("XML_ID", "SORT", "MANDATORY", "SHOW_FILTER", "SHOW_IN_LIST", "EDIT_IN_LIST", "IS_SEARCHABLE")


def _yes_no(value: Any, default: str) -> str:
    if value is None or value == "":
        return default
    return "Y" if str(value).strip().upper() in ("Y", "1", "TRUE") else "N"


def _show_filter(value: Any) -> str:
    """list shows N/I/E/S; add takes Y/N. [inferred] Y is stored as E (mask), the value the docs' examples show."""
    text = str(value or "N").strip().upper()
    return text if text in ("N", "I", "E", "S") else ("E" if text == "Y" else "N")


def _fields(call: Call) -> dict[str, Any]:
    fields = call.param("fields")
    if not isinstance(fields, dict):
        raise legacy("Parameter 'fields' must be array.")
    return {str(k).upper(): v for k, v in fields.items()}


def _items(world: World, raw: Any, multiple: bool, current: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """LIST items (docs uf_enum_element): no VALUE → ignored; ID → change (DEL=Y → delete); XML_ID unique."""
    items = {int(item["ID"]): dict(item) for item in current}
    for entry in [e for e in (raw.values() if isinstance(raw, dict) else raw or []) if isinstance(e, dict)]:
        entry = {str(k).upper(): v for k, v in entry.items()}
        known = items.get(int(entry["ID"])) if str(entry.get("ID", "")).isdigit() else None
        if known is not None and str(entry.get("DEL", "")).upper() == "Y":
            del items[int(known["ID"])]
            continue
        if not str(entry.get("VALUE") or "").strip():
            continue
        item = known or {"ID": world.next_id("user_field_enum")}
        item.update(
            VALUE=str(entry["VALUE"]),
            SORT=max(0, int(entry.get("SORT") or 0)),
            DEF=_yes_no(entry.get("DEF"), "N"),
            XML_ID=str(entry.get("XML_ID") or item.get("XML_ID") or f"{item['ID']:032x}"),
        )
        items[int(item["ID"])] = item
    result = sorted(items.values(), key=lambda i: (int(i["SORT"]), int(i["ID"])))
    xml_ids = [i["XML_ID"] for i in result]
    for xml_id in xml_ids:
        if xml_ids.count(xml_id) > 1:
            raise RestError("ERROR_CORE", f"List item with value XML_ID={xml_id} already exists.")
    if not multiple:  # docs: a single-value field keeps the first default only
        first = next((i for i in result if i["DEF"] == "Y"), None)
        for item in result:
            item["DEF"] = "Y" if item is first else "N"
    return result


def _view(field: dict[str, Any], lang: str | None = None, all_labels: bool = True) -> dict[str, Any]:
    """get shows every label in every language; list shows them only for a LANG filter (``lang``)."""
    view: dict[str, Any] = {"ID": str(field["ID"]), **{key: field[key] for key in _VIEW_KEYS}}
    view["SORT"] = str(field["SORT"])
    if lang is not None:  # docs: list shows labels only when filtered by LANG, as that language's text
        view.update({label: field[label].get(lang.lower()) for label in uf.LABELS})
    elif all_labels:
        view.update({label: field[label] for label in uf.LABELS})
    if field["USER_TYPE_ID"] == "enumeration":
        view["LIST"] = [{**item, "ID": str(item["ID"]), "SORT": str(item["SORT"])} for item in uf.sorted_items(field)]
    return view


def _owned(call: Call, entity: str) -> dict[str, Any]:
    field = uf.find_by_id(call.world, record_id(call))
    if field is None:
        raise RestError("ERROR_NOT_FOUND", f"The entity with ID '{call.param('id')}' is not found")
    if field["ENTITY_ID"] != uf.UF_ENTITIES[entity]:
        raise legacy("Access denied.")
    return field


def make_handlers(entity: str) -> dict[str, Callable[[Call], Any]]:
    def add(call: Call) -> Any:
        call.require_admin()
        raw = call.param("fields")
        fields = _fields(call) if raw is not None else {str(k).upper(): v for k, v in call.params.items()}
        code = str(fields.get("FIELD_NAME") or "").strip()
        if not code:
            raise legacy("The 'FIELD_NAME' field is not found.")
        user_type = str(fields.get("USER_TYPE_ID") or "").strip()
        if not user_type:
            raise legacy("The 'USER_TYPE_ID' field is not found.")
        name = uf.full_name(code)
        problem = uf.name_problem(name)
        if problem is not None:
            raise RestError("ERROR_CORE", problem)
        if user_type not in uf.TYPES:
            raise RestError("ERROR_CORE", "Incorrect custom type specified.")
        world = call.world
        if uf.find(world, entity, name) is not None:
            raise RestError("ERROR_CORE", f"A field with the code {name} already exists.")  # [inferred] text
        multiple = _yes_no(fields.get("MULTIPLE"), "N") == "Y" and user_type != "boolean"
        label = fields.get("LABEL") or ""
        field: dict[str, Any] = {
            "ID": world.next_id("user_field"),
            "ENTITY_ID": uf.UF_ENTITIES[entity],
            "FIELD_NAME": name,
            "USER_TYPE_ID": user_type,
            "XML_ID": fields.get("XML_ID"),
            "SORT": max(1, int(fields.get("SORT") or 100)),
            "MULTIPLE": "Y" if multiple else "N",
            "MANDATORY": _yes_no(fields.get("MANDATORY"), "N"),
            "SHOW_FILTER": _show_filter(fields.get("SHOW_FILTER")),
            "SHOW_IN_LIST": _yes_no(fields.get("SHOW_IN_LIST"), "N"),
            "EDIT_IN_LIST": _yes_no(fields.get("EDIT_IN_LIST"), "Y"),
            "IS_SEARCHABLE": _yes_no(fields.get("IS_SEARCHABLE"), "N"),
            "SETTINGS": uf.settings(user_type, fields.get("SETTINGS")),
            **{key: uf.lang_map(fields.get(key), label) for key in uf.LABELS},
            "LIST": _items(world, fields.get("LIST"), multiple, []) if user_type == "enumeration" else [],
        }
        uf.definitions(world, entity).append(field)
        return field["ID"]

    def get(call: Call) -> Any:
        return _view(_owned(call, entity))

    def list_(call: Call) -> Any:
        flt = call.param("filter") or {}
        if not isinstance(flt, dict):
            raise legacy("Parameter 'filter' must be array.")
        wanted = {str(k).upper().lstrip("="): v for k, v in flt.items()}
        lang = wanted.pop("LANG", None)
        rows = [f for f in uf.definitions(call.world, entity)
                if all(str(f.get(k)).upper() == str(v).upper() for k, v in wanted.items())]  # fmt: skip
        order = call.param("order") or {"SORT": "ASC", "ID": "ASC"}
        return [_view(f, None if lang is None else str(lang), all_labels=False) for f in sort_rows(rows, order)]

    def update(call: Call) -> Any:
        call.require_admin()
        field = _owned(call, entity)
        fields = _fields(call)
        for key in _UPDATABLE:
            if key in fields:
                field[key] = _show_filter(fields[key]) if key == "SHOW_FILTER" else fields[key]
        for key in ("MANDATORY", "SHOW_IN_LIST", "EDIT_IN_LIST", "IS_SEARCHABLE"):
            field[key] = _yes_no(field[key], "N")
        if "SETTINGS" in fields:
            field["SETTINGS"] = uf.settings(field["USER_TYPE_ID"], {**field["SETTINGS"], **(fields["SETTINGS"] or {})})
        for key in uf.LABELS:
            if key in fields:
                field[key] = (
                    uf.lang_map(fields[key], "")
                    if not isinstance(fields[key], dict)
                    else {**field[key], **{str(k).lower(): str(v) for k, v in fields[key].items()}}
                )
        if "LIST" in fields and field["USER_TYPE_ID"] == "enumeration":
            field["LIST"] = _items(call.world, fields["LIST"], field["MULTIPLE"] == "Y", field["LIST"])
        return True

    def delete(call: Call) -> Any:
        call.require_admin()
        field = _owned(call, entity)
        uf.definitions(call.world, entity).remove(field)
        for record in call.world.records(entity).values():
            record.pop(field["FIELD_NAME"], None)
        return True

    return {"add": add, "get": get, "list": list_, "update": update, "delete": delete}


for _entity in uf.UF_ENTITIES:
    for _action, _handler in make_handlers(_entity).items():
        rest_method(f"crm.{_entity.lower()}.userfield.{_action}", "crm")(_handler)
