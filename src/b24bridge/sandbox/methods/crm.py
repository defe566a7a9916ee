"""Legacy ``crm.contact.*``, ``crm.company.*``, ``crm.deal.*`` and ``crm.lead.*``: one engine driven by the field
tables.

Errors are the legacy ones (empty ``error`` code, HTTP 400) with the texts of docs:`api-reference/crm/*/crm-*-*.md`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from .. import crm_userfields as uf
from ..crm_fields import ENTITIES, EntityDef, is_user_field
from ..crm_query import matcher, page_of, parse_filter, select_names, sort_rows
from ..crm_rules import RULES, common_defaults, touch
from ..crm_values import apply_multi, check_multi, coerce, render, render_loose
from ..errors import RestError, legacy
from ..registry import Call, Page, rest_method


def record_id(call: Call, message: str = "ID is not defined or invalid.") -> int:
    """A positive integer ``id`` (JSON number or form string), else the documented legacy error."""
    raw = call.param("id")
    try:
        value = int(str(raw).strip()) if raw is not None and not isinstance(raw, bool | dict | list) else 0
    except ValueError:
        value = 0
    if value <= 0:
        raise legacy(message)
    return value


def _fields_param(call: Call) -> dict[str, Any]:
    fields = call.map_param("fields")
    if fields is None:
        raise legacy("Parameter 'fields' must be array.")
    params = call.param("params")
    if params not in (None, "", []) and not isinstance(params, dict):
        raise legacy("Parameter 'params' must be array.")
    return {str(k).upper(): v for k, v in fields.items()}


def _write(call: Call, ent: EntityDef, record: dict[str, Any], fields: dict[str, Any], creating: bool) -> None:
    """Apply incoming ``fields`` to ``record`` (validated first, so a failure leaves the record as it was)."""
    tz = call.sandbox.tz
    before = None if creating else dict(record)
    staged: dict[str, Any] = {}
    for name, value in fields.items():
        field = ent.by_name.get(name)
        if field is None:
            user_field = uf.find(call.world, ent.entity, name)
            if user_field is not None:
                stored = uf.coerce(user_field, value, tz)
                if stored is not uf.DROPPED:
                    staged[name] = stored
            elif is_user_field(name):
                # A UF_* field never created with *.userfield.add is kept as given (a documented deviation: the
                # portal drops it).
                staged[name] = value
            continue  # docs: an incorrect field in fields is ignored
        if field.type == "crm_multifield":
            staged[name] = apply_multi(call.world, name, record.get(name) or [], value)
        elif field.read_only or (field.immutable and not creating):
            continue  # read-only fields and, on update, immutable ones (deal CATEGORY_ID) are silently kept
        else:
            staged[name] = coerce(field, value, tz)
    record.update(staged)
    RULES[ent.entity](call, before, record, staged)


def _view(call: Call, ent: EntityDef, record: dict[str, Any], names: list[str] | None = None) -> dict[str, Any]:
    tz = call.sandbox.tz
    out: dict[str, Any] = {}
    if names is None:  # get: every visible field, then user/relation fields, then non-empty multi-fields
        names = [f.name for f in ent.fields if not f.hidden and f.type != "crm_multifield"]
        names += list(dict.fromkeys([*uf.names(call.world, ent.entity), *(k for k in record if is_user_field(k))]))
        names += [f.name for f in ent.fields if f.type == "crm_multifield"]
    for name in names:
        field = ent.by_name.get(name)
        value = record.get(name)
        user_field = uf.find(call.world, ent.entity, name) if field is None else None
        if user_field is not None:
            out[name] = uf.render(user_field, value, tz)
        elif field is None:
            out[name] = render_loose(value)
        elif field.type == "crm_multifield":
            if value:  # docs: multi-fields are returned only when they hold values
                out[name] = render(field, value, tz)
        else:
            out[name] = render(field, value, tz)
    return out


def make_handlers(ent: EntityDef) -> dict[str, Callable[[Call], Any]]:
    def add(call: Call) -> Any:
        fields = _fields_param(call)
        records = call.world.records(ent.entity)
        record: dict[str, Any] = {}
        _write_new(call, ent, record, fields)
        records[record["ID"]] = record
        call.sandbox.crm_changed(ent.entity, "ADD", record["ID"], None, dict(record), actor_user_id=call.caller.user_id)
        return record["ID"]

    def get(call: Call) -> Any:
        record = call.world.records(ent.entity).get(record_id(call))
        if record is None:
            raise legacy("Not found")
        return _view(call, ent, record)

    def update(call: Call) -> Any:
        rid = record_id(call)
        fields = _fields_param(call)
        record = call.world.records(ent.entity).get(rid)
        if record is None:
            raise legacy(ent.update_missing)
        before = dict(record)
        working = dict(record)
        _write(call, ent, working, fields, creating=False)
        touch(call, working)
        record.clear()
        record.update(working)
        call.sandbox.crm_changed(ent.entity, "UPDATE", rid, before, dict(record), actor_user_id=call.caller.user_id)
        return True

    def delete(call: Call) -> Any:
        rid = record_id(call)
        record = call.world.records(ent.entity).pop(rid, None)
        if record is None:
            code, text = ent.delete_missing
            raise legacy(text) if not code else _core(text)
        call.world.product_rows.get(ent.entity, {}).pop(rid, None)  # a deal's or lead's product rows go with it
        call.sandbox.crm_changed(ent.entity, "DELETE", rid, record, None, actor_user_id=call.caller.user_id)
        return True

    def list_(call: Call) -> Any:
        conditions = parse_filter(call.param("filter"))
        test = matcher({**ent.by_name, **uf.filter_defs(call.world, ent.entity)}, conditions, call.sandbox.tz)
        rows = sort_rows([r for r in call.world.records(ent.entity).values() if test(r)], call.param("order"))
        page, total, nxt = page_of(rows, call.param("start"))
        select = call.param("select")
        defined = uf.names(call.world, ent.entity)
        items = [_view(call, ent, r, select_names(ent, select, [*defined, *r.keys()])) for r in page]
        return Page(items, total, nxt)

    def fields(call: Call) -> Any:
        described = {f.name: f.describe() for f in ent.fields}
        user_fields = uf.definitions(call.world, ent.entity) if ent.entity in uf.UF_ENTITIES else []
        return {**described, **{f["FIELD_NAME"]: uf.describe(f) for f in user_fields}}

    return {"add": add, "get": get, "update": update, "delete": delete, "list": list_, "fields": fields}


def _write_new(call: Call, ent: EntityDef, record: dict[str, Any], fields: dict[str, Any]) -> None:
    # Multi-field values are checked before an ID is taken, so a rejected add leaves no gap in the sequence.
    for name, value in fields.items():
        field = ent.by_name.get(name)
        if field is not None and field.type == "crm_multifield":
            check_multi(name, value)
    record["ID"] = call.world.next_id(ent.entity)
    # User fields not given take their defaults, as the portal fills empty fields before it saves.
    for user_field in uf.definitions(call.world, ent.entity) if ent.entity in uf.UF_ENTITIES else []:
        record[user_field["FIELD_NAME"]] = uf.default_value(user_field, call.sandbox.now(), call.sandbox.tz)
    _write(call, ent, record, fields, creating=True)
    common_defaults(call, record, record["ID"])


def _core(text: str) -> RestError:
    return RestError("ERROR_CORE", text)


for _ent in ENTITIES:
    for _action, _handler in make_handlers(_ent).items():
        rest_method(f"crm.{_ent.method}.{_action}", "crm")(_handler)
