"""Smart-process items: their fields, what a write does to them, and how ``crm.item.*`` shows them.

Items are kept like the legacy records: upper-case keys (``TITLE``, ``STAGE_ID``, ``ASSIGNED_BY_ID``, ``UF_CRM_1_X``,
``PARENT_ID_2``), natives as ``crm_values`` stores them, in ``World.records("DYNAMIC_{entityTypeId}")``. REST names
are camelCase (docs crm/universal/index.md "Field Naming Conventions"): ``ASSIGNED_BY_ID`` is ``assignedById``, user
fields follow the documented regular and simplified conversions (``UF_CRM_3_DIGIT`` → ``ufCrm3Digit``,
``UF_CRM_3_1747309727`` → ``ufCrm3_1747309727``, ``UF_CRM_3_DIGIT10`` → ``ufCrm_3_DIGIT10``).

The field set is the docs' crm-item-fields.md smart-process example (names, types, flags, titles, in that order).
Fields that belong to a switch of the type (docs object-fields.md "available only when ...": ``begindate`` with
``isBeginCloseDatesEnabled``, the client fields with ``isClientEnabled``, ...) are listed by ``crm.item.fields`` and
written only while it is on; while it is off they read back as ``null`` (docs crm-item-add.md: "Disabled fields always
return null"). [inferred] they are neither filterable nor sortable then, and an item still gets its funnel's first
stage while stages are off.

Stages (docs crm-item-add/update.md, tutorial how-to-generate-edit-form-for-deal.md): a new item starts in its
funnel's first stage; a stage that is not one of the item's funnel is refused with ``CRM_FIELD_ERROR_VALUE_NOT_VALID``
(docs: "Invalid value for field"; the tutorials name a wrong stage code as its cause); moving an item to another
funnel takes the given stage when it is that funnel's, else the funnel's first stage of the same semantics. [The
newest public copy of ``Stage::processLogic`` keeps the old stage on update and picks the first one on add instead
of refusing; the sandbox follows the docs.]
"""

from __future__ import annotations

import re
from dataclasses import replace
from typing import Any

from . import crm_categories as funnels
from . import crm_types as types
from .crm_fields import FieldDef
from .crm_rules import primary_with_set, today
from .crm_statuses import find_status, first_status
from .crm_values import coerce, render_native
from .errors import RestError
from .registry import Call
from .wire import as_list

UF_PREFIX = "UF_CRM_"
CLIENT, PRODUCTS = "isClientEnabled", "isLinkWithProductsEnabled"
# (UPPER name, type, title, flags R/O/M/H as in crm_fields, the type switch the field needs)
_TABLE: list[tuple[str, str, str, str, str | None]] = [
    ("ID", "integer", "ID", "O", None),
    ("TITLE", "string", "Name", "", None),
    ("XML_ID", "string", "External code", "", None),
    ("CREATED_TIME", "datetime", "Created at", "O", None),
    ("UPDATED_TIME", "datetime", "Updated at", "O", None),
    ("CREATED_BY", "user", "Created by", "O", None),
    ("UPDATED_BY", "user", "Updated by", "O", None),
    ("ASSIGNED_BY_ID", "user", "Assigned to", "", None),
    ("OPENED", "boolean", "Publicly available", "R", None),
    ("WEBFORM_ID", "integer", "Created by CRM form", "", None),
    ("BEGINDATE", "date", "Start date", "", "isBeginCloseDatesEnabled"),
    ("CLOSEDATE", "date", "End date", "", "isBeginCloseDatesEnabled"),
    ("COMPANY_ID", "crm_company", "Company", "", CLIENT),
    ("CONTACT_ID", "crm_contact", "Contact", "", CLIENT),
    ("CONTACT_IDS", "crm_contact", "CONTACT_IDS", "M", CLIENT),
    ("CONTACTS", "crm_contact", "CONTACTS", "MH", CLIENT),  # [inferred] listed by fields only, not stored
    ("OBSERVERS", "user", "Observers", "M", "isObserversEnabled"),
    ("CATEGORY_ID", "crm_category", "Pipeline", "", None),
    ("MOVED_TIME", "datetime", "Moved at", "O", "isStagesEnabled"),
    ("MOVED_BY", "user", "Moved by", "O", "isStagesEnabled"),
    ("STAGE_ID", "crm_status", "Stage", "", "isStagesEnabled"),
    ("PREVIOUS_STAGE_ID", "crm_status", "Previous stage", "O", "isStagesEnabled"),
    ("SOURCE_ID", "crm_status", "Source", "", "isSourceEnabled"),
    ("SOURCE_DESCRIPTION", "text", "Additional source info", "", "isSourceEnabled"),
    ("CURRENCY_ID", "crm_currency", "Currency", "", PRODUCTS),
    ("IS_MANUAL_OPPORTUNITY", "boolean", "Amount calculation mode", "", PRODUCTS),
    ("OPPORTUNITY", "double", "Amount", "", PRODUCTS),
    ("TAX_VALUE", "double", "Tax amount", "", PRODUCTS),
    ("MYCOMPANY_ID", "crm_company", "Your company details", "", "isMycompanyEnabled"),
    ("LAST_ACTIVITY_BY", "user", "Last activity in timeline by", "O", None),
    ("LAST_ACTIVITY_TIME", "datetime", "Last activity", "O", None),
]
_BASE = [
    FieldDef(name, kind, title, "R" in flags, "O" in flags, False, "M" in flags, hidden="H" in flags)
    for name, kind, title, flags, _ in _TABLE
]
SETTING = {name: setting for name, _, _, _, setting in _TABLE if setting}
# Shown after the other fields in get/list, as the docs' crm.item.get examples show them.
_LAST = ("OBSERVERS", "CONTACT_IDS")
# Extra keys of some fields in crm.item.fields (docs example), put in before / after ``title``.
_DEPRECATED = {"CONTACT_ID"}
_SETTINGS: dict[str, dict[str, Any]] = {
    "COMPANY_ID": {"parentEntityTypeId": 4},
    "MYCOMPANY_ID": {"isMyCompany": True, "parentEntityTypeId": 4, "isEmbeddedEditorEnabled": True},
}
_NUMBER = re.compile(r"\s*-?\d+(?:[.,]\d*)?(?:[eE][-+]?\d+)?\s*")
_PHP_TYPES = {bool: "boolean", int: "integer", float: "double", str: "string"}


# --- names ----------------------------------------------------------------------------------------------------


def camel(upper: str) -> str:
    """``ASSIGNED_BY_ID`` → ``assignedById``, ``PARENT_ID_2`` → ``parentId2``; user fields by ``uf_camel``."""
    if upper.startswith(UF_PREFIX):
        return uf_camel(upper)
    head, *rest = upper.lower().split("_")
    return head + "".join(part.capitalize() for part in rest)


def uf_camel(upper: str) -> str:
    """docs "Field Naming Conventions": the regular conversion when only digits or only letters follow the object
    number (numeric blocks keep their underscores), else the simplified one (``UF_CRM_`` → ``ufCrm_``)."""
    rest = upper[len(UF_PREFIX) :]
    number, _, tail = rest.partition("_")
    if number.isdigit() and tail:
        if re.fullmatch(r"\d+(?:_\d+)*", tail):
            return f"ufCrm{number}_{tail}"
        if re.fullmatch(r"[A-Z]+(?:_[A-Z]+)*", tail):
            return f"ufCrm{number}" + "".join(part.capitalize() for part in tail.split("_"))
    return "ufCrm_" + rest


def uf_upper(name: str) -> str | None:
    """The original name of a user field written either way (the conversions are reversible), None if it is none."""
    if name.startswith(UF_PREFIX):
        return name
    if name.startswith("ufCrm_"):
        return UF_PREFIX + name[len("ufCrm_") :]
    digits = re.fullmatch(r"ufCrm(\d+)_(\d+(?:_\d+)*)", name)
    if digits:
        return f"{UF_PREFIX}{digits[1]}_{digits[2]}"
    words = re.fullmatch(r"ufCrm(\d+)((?:[A-Z][a-z]+)+)", name)
    if words:
        return f"{UF_PREFIX}{words[1]}_" + "_".join(re.findall(r"[A-Z][a-z]+", words[2])).upper()
    return None


def uf_prefix(spa: dict[str, Any]) -> str:
    """A smart process's user fields are ``UF_CRM_{type id}_...`` (docs tutorial how-to-add-user-field-to-spa.md:
    the type's ``id``, not its entityTypeId)."""
    return f"{UF_PREFIX}{spa['id']}_"


def public_name(name: str, original_uf: bool) -> str:
    return name if original_uf and name.startswith(UF_PREFIX) else camel(name)


# --- the field set ----------------------------------------------------------------------------------------------


def fields_of(world: Any, spa: dict[str, Any]) -> list[FieldDef]:
    """Every field of the type's items in the docs' order: the stock ones, then one ``PARENT_ID_{n}`` per parent."""
    category = funnels.default_category(world, int(spa["entityTypeId"]))
    stage_list = funnels.stage_entity_id(world, category) if category is not None else None
    status_types = {"STAGE_ID": stage_list, "PREVIOUS_STAGE_ID": stage_list, "SOURCE_ID": "SOURCE"}
    found = [replace(f, status_type=status_types[f.name]) if f.name in status_types else f for f in _BASE]
    for entity_type_id, title in types.parent_fields(world, spa):
        found.append(FieldDef(f"PARENT_ID_{entity_type_id}", "crm_entity", title))
    return found


def active(spa: dict[str, Any], field: FieldDef) -> bool:
    setting = SETTING.get(field.name)
    return setting is None or types.enabled(spa, setting)


def index(world: Any, spa: dict[str, Any]) -> dict[str, FieldDef]:
    """The fields a caller can name (active ones), by camelCase and by upper-case name."""
    found: dict[str, FieldDef] = {}
    for field in fields_of(world, spa):
        if active(spa, field):
            found[camel(field.name)] = found[field.name] = field
    return found


def resolver(world: Any, spa: dict[str, Any]) -> Any:
    """For filters and order: a named field, or a user field of this type (compared as text, no definitions)."""
    known = index(world, spa)

    def resolve(name: str) -> FieldDef | None:
        field = known.get(name)
        if field is not None and not field.hidden:
            return field
        upper = uf_upper(name)
        return FieldDef(upper, "string", upper) if upper and upper.startswith(uf_prefix(spa)) else None

    return resolve


def describe(world: Any, spa: dict[str, Any], original_uf: bool) -> dict[str, Any]:
    """``crm.item.fields``: the active fields as the docs' example shows them, ``upperName`` last."""
    result: dict[str, Any] = {}
    for field in fields_of(world, spa):
        if not active(spa, field):
            continue
        base = field.describe()
        title = base.pop("title")
        if field.name in _DEPRECATED:
            base["isDeprecated"] = True
        base["title"] = title
        settings = _SETTINGS.get(field.name)
        if field.name.startswith("PARENT_ID_"):
            settings = {"parentEntityTypeId": int(field.name.rsplit("_", 1)[1])}
        if settings:
            base["settings"] = settings
        base["upperName"] = field.name
        result[public_name(field.name, original_uf)] = base
    return result


# --- reading ------------------------------------------------------------------------------------------------------


def view(call: Call, spa: dict[str, Any], record: dict[str, Any], original_uf: bool) -> dict[str, Any]:
    """The item as crm.item.get shows it: every field (switched-off ones null), user fields, ``entityTypeId``."""
    tz = call.sandbox.tz
    fields = [f for f in fields_of(call.world, spa) if not f.hidden]
    parents = [f for f in fields if f.name.startswith("PARENT_ID_")]
    last = [f for name in _LAST for f in fields if f.name == name]
    out: dict[str, Any] = {}
    for field in (f for f in fields if f not in parents and f not in last):
        out[camel(field.name)] = render_native(field, record.get(field.name), tz) if active(spa, field) else None
    for name in sorted(k for k in record if k.startswith(UF_PREFIX)):
        out[public_name(name, original_uf)] = record[name]  # kept as given: smart processes have no UF definitions
    for field in parents + last:
        out[camel(field.name)] = render_native(field, record.get(field.name), tz) if active(spa, field) else None
    out["entityTypeId"] = int(spa["entityTypeId"])
    return out


def _canonical(name: str) -> str:
    """One spelling of a field name: user fields by their original name, the others in camelCase."""
    upper = uf_upper(name)
    if upper is not None:
        return upper
    return camel(name) if name == name.upper() else name


def select(item: dict[str, Any], raw: Any) -> dict[str, Any]:
    """docs crm-item-list.md: ``select`` names fields (or ``*``); the item keeps its own field order."""
    wanted = {_canonical(str(s)) for s in as_list(raw)}
    if not wanted or "*" in wanted:
        return item
    return {k: v for k, v in item.items() if _canonical(k) in wanted}


# --- writing ------------------------------------------------------------------------------------------------------


def not_valid(field: FieldDef) -> RestError:
    return RestError("CRM_FIELD_ERROR_VALUE_NOT_VALID", f'Invalid value for field "{field.title}"')


def _check_reference(call: Call, spa: dict[str, Any], field: FieldDef, stored: Any) -> None:
    """docs tutorials: a stage or source code, a company, contact or user id that does not exist is not valid."""
    world = call.world
    ids = stored if isinstance(stored, list) else [stored]
    for value in (v for v in ids if v is not None):
        if field.type == "user":
            ok = value in world.users
        elif field.type in ("crm_company", "crm_contact"):
            ok = value in world.records("COMPANY" if field.type == "crm_company" else "CONTACT")
        elif field.type == "crm_category":
            ok = funnels.entity_type_of(world, value) == int(spa["entityTypeId"]) and value in world.categories
        elif field.name == "SOURCE_ID":
            ok = find_status(world.statuses, "SOURCE", value) is not None
        else:
            ok = True
        if not ok:
            raise not_valid(field)


def staged_values(call: Call, spa: dict[str, Any], fields: dict[str, Any]) -> dict[str, Any]:
    """The stored values of what ``fields`` may change, checked; names the type does not have are ignored (docs)."""
    known = index(call.world, spa)
    staged: dict[str, Any] = {}
    for key, value in fields.items():
        field = known.get(str(key))
        if field is None:
            upper = uf_upper(str(key))
            if upper and upper.startswith(uf_prefix(spa)):
                staged[upper] = value  # a documented deviation: kept as given, smart processes have no UF definitions
            continue
        if field.read_only or field.hidden:
            continue
        if field.multiple and not isinstance(value, list | dict) and value not in (None, ""):
            kind = _PHP_TYPES.get(type(value), "string")
            raise RestError(100, f"Expected iterable value for multiple field, but got {kind} instead")  # docs
        stored = coerce(field, value, call.sandbox.tz)
        if field.type in ("date", "datetime") and value not in (None, "") and stored is None:
            raise not_valid(field)
        if field.type == "double" and value not in (None, "") and not _NUMBER.fullmatch(str(value)):
            raise not_valid(field)
        _check_reference(call, spa, field, stored)
        staged[field.name] = stored
    return staged


def _field(name: str) -> FieldDef:
    return next(f for f in _BASE if f.name == name)


def apply(call: Call, spa: dict[str, Any], record: dict[str, Any], staged: dict[str, Any], creating: bool) -> None:
    """Write ``staged`` into ``record`` with what the CRM fills in by itself (``record`` has its ID already)."""
    world, now, user = call.world, call.sandbox.now(), call.caller.user_id
    entity_type_id = int(spa["entityTypeId"])
    before = dict(record)
    record.update(staged)
    if record.get("CATEGORY_ID") is None:
        # docs crm-item-update.md: "If the identifier is not specified, the item will be moved to the main pipeline."
        record["CATEGORY_ID"] = funnels.default_category(world, entity_type_id)
    if creating:
        if not record.get("TITLE"):
            record["TITLE"] = f"{spa['title']} #{record['ID']}"  # docs: "{entityTypeName} #{id}"
        if record.get("ASSIGNED_BY_ID") is None:
            record["ASSIGNED_BY_ID"] = user
        record.setdefault("OPENED", "Y")
        record.update(CREATED_BY=user, CREATED_TIME=now, LAST_ACTIVITY_BY=user, LAST_ACTIVITY_TIME=now)
        _defaults(call, spa, record)
    elif not str(record.get("TITLE") or "").strip():
        record["TITLE"] = before.get("TITLE")  # docs tutorial: the title cannot be cleared
    _place(call, spa, record, before if not creating else None, "STAGE_ID" in staged)
    primary_with_set(record, staged, "CONTACT_ID", "CONTACT_IDS")
    if creating or record.get("STAGE_ID") != before.get("STAGE_ID"):
        record.update(MOVED_BY=user, MOVED_TIME=now)
        if not creating:
            record["PREVIOUS_STAGE_ID"] = before.get("STAGE_ID")
    record.update(UPDATED_BY=user, UPDATED_TIME=now)


def _defaults(call: Call, spa: dict[str, Any], record: dict[str, Any]) -> None:
    """docs crm-item-add.md defaults of the switched-on fields."""
    if types.enabled(spa, "isBeginCloseDatesEnabled"):
        record["BEGINDATE"] = record.get("BEGINDATE") or today(call)
        record["CLOSEDATE"] = record.get("CLOSEDATE") or today(call, 7)
    if types.enabled(spa, "isSourceEnabled") and not record.get("SOURCE_ID"):
        record["SOURCE_ID"] = first_status(call.world.statuses, "SOURCE")
    if types.enabled(spa, PRODUCTS):
        # [inferred] as for deals: the portal's base currency, a zero total and tax, automatic mode.
        record["CURRENCY_ID"] = record.get("CURRENCY_ID") or "USD"
        record.setdefault("OPPORTUNITY", 0.0)
        record.setdefault("TAX_VALUE", 0.0)
        record.setdefault("IS_MANUAL_OPPORTUNITY", "N")
    if types.enabled(spa, "isMycompanyEnabled") and record.get("MYCOMPANY_ID") is None:
        mine = [c["ID"] for c in call.world.records("COMPANY").values() if c.get("IS_MY_COMPANY") == "Y"]
        record["MYCOMPANY_ID"] = min(mine) if mine else None


def _place(
    call: Call, spa: dict[str, Any], record: dict[str, Any], before: dict[str, Any] | None, stage_given: bool
) -> None:
    """The item's stage in its funnel (see the module docstring)."""
    world = call.world
    category = int(record["CATEGORY_ID"])
    moved = before is not None and int(before.get("CATEGORY_ID") or 0) != category
    wanted = record.get("STAGE_ID") if stage_given else None
    if wanted and funnels.find_stage(world, category, str(wanted)) is not None:
        return
    if wanted and not moved:
        raise not_valid(_field("STAGE_ID"))
    if before is None:
        record["STAGE_ID"] = funnels.start_stage(world, category)
    elif moved:
        like = str(wanted or before.get("STAGE_ID") or "")
        record["STAGE_ID"] = funnels.first_stage_like(world, category, like) or funnels.start_stage(world, category)


def changed(before: dict[str, Any], after: dict[str, Any]) -> bool:
    """docs crm-item-update.md: when no value changed, nothing is saved."""
    ignored = {"UPDATED_BY", "UPDATED_TIME"}
    return {k: v for k, v in before.items() if k not in ignored} != {k: v for k, v in after.items() if k not in ignored}
