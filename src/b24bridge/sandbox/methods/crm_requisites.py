"""Company and contact requisites (tax numbers and legal details): ``crm.requisite.{add,get,list,update,delete,fields}``
and ``crm.requisite.preset.list`` (docs api-reference/crm/requisites/universal/*.md, presets/*.md).

Requisites live in ``world.crm["REQUISITE"]``; deleting a company or contact deletes its requisites.
[inferred] the texts of errors the docs do not show (a missing NAME, a bad id), and that values read back as
strings with ``null`` for unset fields and ``""`` for a DATE_MODIFY never set (the docs' get example).
"""

from __future__ import annotations

from typing import Any

from ..crm_fields import FieldDef
from ..crm_query import matcher, page_of, parse_filter, sort_rows
from ..crm_values import coerce, render
from ..errors import legacy
from ..registry import Call, Page, rest_method
from ..runtime import CrmAction, Sandbox
from .crm import record_id

ENTITY = "REQUISITE"
OWNERS = {3: "CONTACT", 4: "COMPANY"}  # ENTITY_TYPE_ID -> CRM entity (docs: only these two)
# A new portal's templates (docs crm-requisite-preset-list.md example).
PRESETS = [{"ID": "1", "NAME": "Organization"}, {"ID": "2", "NAME": "Sole Proprietorship"},
           {"ID": "3", "NAME": "Individual"}, {"ID": "4", "NAME": "Organization (additional)"}]  # fmt: skip
_RQ = (  # the RQ_ fields of docs crm-requisite-add.md, without their prefix
    "NAME", "FIRST_NAME", "LAST_NAME", "SECOND_NAME", "COMPANY_ID", "COMPANY_NAME", "COMPANY_FULL_NAME",
    "COMPANY_REG_DATE", "DIRECTOR", "ACCOUNTANT", "CEO_NAME", "CEO_WORK_POS", "CONTACT", "EMAIL", "PHONE", "FAX",
    "IDENT_TYPE", "IDENT_DOC", "IDENT_DOC_SER", "IDENT_DOC_NUM", "IDENT_DOC_PERS_NUM", "IDENT_DOC_DATE",
    "IDENT_DOC_ISSUED_BY", "IDENT_DOC_DEP_CODE", "INN", "KPP", "USRLE", "IFNS", "OGRN", "OGRNIP", "OKPO", "OKTMO",
    "OKVED", "EDRPOU", "DRFO", "KBE", "IIN", "BIN", "ST_CERT_SER", "ST_CERT_NUM", "ST_CERT_DATE", "VAT_PAYER",
    "VAT_ID", "VAT_CERT_SER", "VAT_CERT_NUM", "VAT_CERT_DATE", "RESIDENCE_COUNTRY", "BASE_DOC", "REGON", "KRS",
    "PESEL", "LEGAL_FORM", "SIRET", "SIREN", "CAPITAL", "RCS", "CNPJ", "STATE_REG", "MNPL_REG", "CPF",
)  # fmt: skip
FIELDS: tuple[FieldDef, ...] = (
    FieldDef("ID", "integer", "ID", read_only=True),
    FieldDef("ENTITY_TYPE_ID", "integer", "Parent entity type ID", required=True, immutable=True),
    FieldDef("ENTITY_ID", "integer", "Parent entity ID", required=True, immutable=True),
    FieldDef("PRESET_ID", "integer", "Template ID", required=True),
    FieldDef("DATE_CREATE", "datetime", "Created on", read_only=True),
    FieldDef("DATE_MODIFY", "datetime", "Modified on", read_only=True),
    FieldDef("CREATED_BY_ID", "user", "Created by", read_only=True),
    FieldDef("MODIFY_BY_ID", "user", "Modified by", read_only=True),
    FieldDef("NAME", "string", "Name", required=True),
    FieldDef("CODE", "string", "Symbolic Code"),
    FieldDef("XML_ID", "string", "External ID"),
    FieldDef("ORIGINATOR_ID", "string", "External source ID"),
    FieldDef("ACTIVE", "char", "Active"),
    FieldDef("ADDRESS_ONLY", "char", "Address only"),
    FieldDef("SORT", "integer", "Sort"),
    *(FieldDef(f"RQ_{name}", "char" if name == "VAT_PAYER" else "string", f"RQ_{name}") for name in _RQ),
)
BY_NAME = {f.name: f for f in FIELDS}


def drop_owned(sandbox: Sandbox, entity: str, action: CrmAction, record_id: int, *_: Any) -> None:
    """A CRM listener: a deleted company's or contact's requisites go with it."""
    type_id = next((t for t, name in OWNERS.items() if name == entity), None)
    if action != "DELETE" or type_id is None:
        return
    records = sandbox.world.records(ENTITY)
    for key in [k for k, r in records.items() if r["ENTITY_TYPE_ID"] == type_id and r["ENTITY_ID"] == record_id]:
        del records[key]


def attach(sandbox: Sandbox) -> None:
    """Subscribe the requisites to the portal's CRM changes (once per portal)."""
    if drop_owned not in sandbox.crm_listeners:
        sandbox.crm_listeners.append(drop_owned)


def _fields(call: Call) -> dict[str, Any]:
    fields = call.param("fields")
    if not isinstance(fields, dict):
        raise legacy("Parameter 'fields' must be array.")
    return {str(k).upper(): v for k, v in fields.items()}


def _apply(call: Call, record: dict[str, Any], fields: dict[str, Any], creating: bool) -> None:
    for name, value in fields.items():
        field = BY_NAME.get(name)
        if field is None or field.read_only or (field.immutable and not creating):
            continue  # an unknown, read-only or (on update) immutable field is ignored
        record[name] = coerce(field, value, call.sandbox.tz)


def _requisite(call: Call) -> dict[str, Any]:
    rid = record_id(call)
    record = call.world.records(ENTITY).get(rid)
    if record is None:
        raise legacy(f"The Requisite with ID '{rid}' is not found")
    return record


def _view(call: Call, record: dict[str, Any], names: list[str]) -> dict[str, Any]:
    view = {name: render(BY_NAME[name], record.get(name), call.sandbox.tz) for name in names}
    if "DATE_MODIFY" in view and view["DATE_MODIFY"] is None:
        view["DATE_MODIFY"] = ""  # the docs' get example: never modified reads as ""
    return view


@rest_method("crm.requisite.add", "crm")
def requisite_add(call: Call) -> Any:
    fields = _fields(call)
    world = call.world
    try:
        owner_type = int(str(fields.get("ENTITY_TYPE_ID")).strip())
    except ValueError:
        owner_type = 0
    if owner_type not in OWNERS:
        raise legacy("ENTITY_TYPE_ID is not defined or invalid.")
    owner_id = coerce(BY_NAME["ENTITY_ID"], fields.get("ENTITY_ID"), call.sandbox.tz)
    if not owner_id or owner_id <= 0:
        raise legacy("ENTITY_ID is not defined or invalid.")
    if str(fields.get("PRESET_ID", "")).strip() not in {p["ID"] for p in PRESETS}:
        raise legacy("PRESET_ID is not defined or invalid.")
    if owner_id not in world.records(OWNERS[owner_type]):
        raise legacy("Entity not found.")
    if not str(fields.get("NAME") or "").strip():
        raise legacy("The field NAME is required.")  # [inferred] text
    now, user = call.sandbox.now(), call.caller.user_id
    record: dict[str, Any] = {"ID": world.next_id(ENTITY), "ACTIVE": "Y", "ADDRESS_ONLY": "N", "SORT": 500,
                              "RQ_VAT_PAYER": "N", "DATE_CREATE": now, "CREATED_BY_ID": user}  # fmt: skip
    _apply(call, record, fields, creating=True)
    world.records(ENTITY)[record["ID"]] = record
    return record["ID"]


@rest_method("crm.requisite.get", "crm")
def requisite_get(call: Call) -> Any:
    return _view(call, _requisite(call), [f.name for f in FIELDS])


@rest_method("crm.requisite.update", "crm")
def requisite_update(call: Call) -> Any:
    record = _requisite(call)
    _apply(call, record, _fields(call), creating=False)
    record.update(DATE_MODIFY=call.sandbox.now(), MODIFY_BY_ID=call.caller.user_id)
    return True


@rest_method("crm.requisite.delete", "crm")
def requisite_delete(call: Call) -> Any:
    record = _requisite(call)
    del call.world.records(ENTITY)[record["ID"]]
    return True


@rest_method("crm.requisite.list", "crm")
def requisite_list(call: Call) -> Any:
    test = matcher(BY_NAME, parse_filter(call.param("filter")), call.sandbox.tz)
    rows = sort_rows([r for r in call.world.records(ENTITY).values() if test(r)], call.param("order"))
    page, total, nxt = page_of(rows, call.param("start"))
    select = [str(s).upper() for s in call.param("select") or []] if isinstance(call.param("select"), list) else []
    # docs: no select = every field; a select returns just those fields, without an implicit ID (example 2)
    names = [n for n in select if n in BY_NAME] or [f.name for f in FIELDS]
    return Page([_view(call, r, names) for r in page], total, nxt)


@rest_method("crm.requisite.fields", "crm")
def requisite_fields(call: Call) -> Any:
    return {f.name: f.describe() for f in FIELDS}


@rest_method("crm.requisite.preset.list", "crm")
def preset_list(call: Call) -> Any:
    return Page([dict(p) for p in PRESETS], total=len(PRESETS))
