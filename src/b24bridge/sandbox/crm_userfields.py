"""User fields (``UF_CRM_*``) of deals, contacts, companies and leads: definitions, stored values, what REST shows.

Definitions follow docs crm-{deal,contact,company,lead}-userfield-{add,list,get,update,delete}.md; how values are read
back follows the crm module's REST layer (``CCrmRestService::externalizeFields``, read in public source): dates and
datetimes in ISO 8601, an empty date as ``""``; every other value as the database hands it to PHP, so as a string.
How values are taken in follows the main module's user types where their source was read (enumeration: the item id,
no check against the list; boolean: any true value is 1) and the REST layer (an unparseable date is dropped, the
field keeps its value). [inferred] integer/double parsing of garbage (PHP intval/doubleval, so 0), ``Y``/``N``
accepted for booleans, an empty multiple field read back as ``false``, and the stock SETTINGS of each type.
"""

from __future__ import annotations

import re
from datetime import timezone
from typing import Any

from .crm_fields import FieldDef
from .crm_values import parse_date, parse_datetime, render_date
from .state import World
from .wire import as_list, iso

# The UF entity behind each legacy CRM entity (docs: ENTITY_ID "CRM_DEAL" in crm.deal.userfield.list).
UF_ENTITIES = {"DEAL": "CRM_DEAL", "CONTACT": "CRM_CONTACT", "COMPANY": "CRM_COMPANY", "LEAD": "CRM_LEAD"}
TYPES = (
    "string", "integer", "double", "boolean", "datetime", "date", "money", "url", "address", "enumeration",
    "file", "employee", "crm_status", "iblock_section", "iblock_element", "crm",
)  # fmt: skip
LANGUAGES = (
    "ar",
    "br",
    "de",
    "en",
    "fr",
    "hi",
    "id",
    "in",
    "it",
    "ja",
    "kz",
    "la",
    "ms",
    "pl",
    "ru",
    "sc",
    "tc",
    "th",
    "tr",
    "ua",
    "vn",
)  # fmt: skip  (the languages of the docs' crm.deal.userfield.get example)
LABELS = ("EDIT_FORM_LABEL", "LIST_COLUMN_LABEL", "LIST_FILTER_LABEL", "ERROR_MESSAGE", "HELP_MESSAGE")
PORTAL_LANGUAGE = "en"
NAME_LIMIT = 50
_NAME_CHARS = re.compile(r"^[A-Z0-9_]+$")
_NUMBER_PREFIX = re.compile(r"^\s*[-+]?\d+(?:[.,]\d*)?")
# How values of each type compare in list filters: the legacy field type the stored value behaves like.
_FILTER_TYPES = {"integer": "integer", "employee": "integer", "boolean": "integer", "enumeration": "integer",
                 "double": "double", "date": "date", "datetime": "datetime"}  # fmt: skip
_STOCK_SETTINGS: dict[str, dict[str, Any]] = {
    "string": {"SIZE": 20, "ROWS": 1, "REGEXP": "", "MIN_LENGTH": 0, "MAX_LENGTH": 0, "DEFAULT_VALUE": ""},
    "integer": {"SIZE": 20, "MIN_VALUE": 0, "MAX_VALUE": 0, "DEFAULT_VALUE": None},
    "double": {"PRECISION": 2, "SIZE": 20, "MIN_VALUE": 0, "MAX_VALUE": 0, "DEFAULT_VALUE": None},
    "boolean": {"DEFAULT_VALUE": 0, "DISPLAY": "CHECKBOX", "LABEL": ["", ""], "LABEL_CHECKBOX": ""},
    "date": {"DEFAULT_VALUE": {"TYPE": "NONE", "VALUE": ""}},
    "datetime": {"DEFAULT_VALUE": {"TYPE": "NONE", "VALUE": ""}, "USE_SECOND": "Y", "USE_TIMEZONE": "N"},
    "enumeration": {"DISPLAY": "LIST", "LIST_HEIGHT": 1, "CAPTION_NO_VALUE": "", "SHOW_NO_VALUE": "Y"},
    "money": {"DEFAULT_VALUE": ""},
}


class Dropped:
    """A value the portal does not store (an unparseable date): the field keeps what it had."""


DROPPED = Dropped()


def definitions(world: World, entity: str) -> list[dict[str, Any]]:
    return world.user_fields.setdefault(UF_ENTITIES[entity], [])


def find(world: World, entity: str, field_name: str) -> dict[str, Any] | None:
    if entity not in UF_ENTITIES:
        return None
    return next((uf for uf in definitions(world, entity) if uf["FIELD_NAME"] == field_name), None)


def find_by_id(world: World, field_id: int) -> dict[str, Any] | None:
    for fields in world.user_fields.values():
        for uf in fields:
            if uf["ID"] == field_id:
                return uf
    return None


def names(world: World, entity: str) -> list[str]:
    return [uf["FIELD_NAME"] for uf in definitions(world, entity)] if entity in UF_ENTITIES else []


def filter_defs(world: World, entity: str) -> dict[str, FieldDef]:
    """FieldDefs that make list filters compare user-field values by their type."""
    if entity not in UF_ENTITIES:
        return {}
    return {
        uf["FIELD_NAME"]: FieldDef(uf["FIELD_NAME"], _FILTER_TYPES.get(uf["USER_TYPE_ID"], "string"), uf["FIELD_NAME"],
                                   multiple=uf["MULTIPLE"] == "Y")
        for uf in definitions(world, entity)
    }  # fmt: skip


def full_name(code: str) -> str:
    """docs: ``X`` → ``UF_CRM_X``, ``UF_X`` → ``UF_CRM_X``, ``UF_CRM_X`` unchanged; upper-cased."""
    code = code.strip().upper()
    if code.startswith("UF_CRM_"):
        return code
    return "UF_CRM_" + (code[3:] if code.startswith("UF_") else code)


def name_problem(name: str) -> str | None:
    if len(name) > NAME_LIMIT:
        return "Field name is too long (more than 50 characters)."
    if not _NAME_CHARS.match(name):
        return "Field name contains invalid characters. Allowed characters are: A-Z, 0-9 and _."
    return None


def lang_map(value: Any, fallback: Any = "") -> dict[str, str]:
    """A label in every language: a string for all of them; a map for those it names, ``fallback`` (LABEL, itself
    a string or a map) for the others (docs crm-deal-userfield-add.md)."""
    base = fallback if isinstance(fallback, dict) else {}
    default = "" if isinstance(fallback, dict) else str(fallback or "")
    if isinstance(value, dict):
        given = {str(k).lower(): str(v) for k, v in value.items()}
        return {lang: given.get(lang, str(base.get(lang, default))) for lang in LANGUAGES}
    if value is None:
        return {lang: str(base.get(lang, default)) for lang in LANGUAGES}
    return {lang: str(value) for lang in LANGUAGES}


def settings(user_type: str, given: Any) -> dict[str, Any]:
    merged = dict(_STOCK_SETTINGS.get(user_type, {}))
    if isinstance(given, dict):
        merged.update({str(k).upper(): v for k, v in given.items()})
    return merged


def describe(uf: dict[str, Any]) -> dict[str, Any]:
    """The field as crm.{entity}.fields shows it (docs crm-company-fields.md, user field entries)."""
    view: dict[str, Any] = {
        "type": uf["USER_TYPE_ID"],
        "isRequired": uf["MANDATORY"] == "Y",
        "isReadOnly": False,
        "isImmutable": False,
        "isMultiple": uf["MULTIPLE"] == "Y",
        "isDynamic": True,
    }
    if uf["USER_TYPE_ID"] == "enumeration":
        view["items"] = [{"ID": str(item["ID"]), "VALUE": item["VALUE"]} for item in sorted_items(uf)]
    view["title"] = uf["FIELD_NAME"]
    view["listLabel"] = uf["LIST_COLUMN_LABEL"].get(PORTAL_LANGUAGE, "")
    view["formLabel"] = uf["EDIT_FORM_LABEL"].get(PORTAL_LANGUAGE, "")
    view["filterLabel"] = uf["LIST_FILTER_LABEL"].get(PORTAL_LANGUAGE, "")
    view["settings"] = uf["SETTINGS"]
    return view


def sorted_items(uf: dict[str, Any]) -> list[dict[str, Any]]:
    return sorted(uf.get("LIST") or [], key=lambda item: (int(item["SORT"]), int(item["ID"])))


# --- values ------------------------------------------------------------------------------------------------------


def _int(value: Any) -> int | None:
    """PHP intval of what came in: the leading number, 0 for garbage, None for nothing."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    if isinstance(value, bool):
        return int(value)
    match = _NUMBER_PREFIX.match(str(value))
    return int(float(match.group(0).replace(",", "."))) if match else 0


def _float(value: Any, precision: int) -> float | None:
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    match = _NUMBER_PREFIX.match(str(value))
    return round(float(match.group(0).replace(",", ".")), precision) if match else 0.0


def _one(uf: dict[str, Any], value: Any, tz: timezone) -> Any:
    kind = uf["USER_TYPE_ID"]
    if kind in ("integer", "employee", "enumeration"):
        return _int(value)
    if kind == "double":
        return _float(value, int(uf["SETTINGS"].get("PRECISION", 2)))
    if kind == "boolean":
        return 1 if str(value).strip().upper() in ("Y", "1", "TRUE", "YES") else 0
    if kind in ("date", "datetime"):
        if value is None or str(value).strip() == "":
            return None
        parsed = parse_date(value) if kind == "date" else parse_datetime(value, tz)
        return DROPPED if parsed is None else parsed
    if kind == "file":
        return None  # [inferred] files are not stored by the sandbox
    return None if value is None or isinstance(value, dict | list) else str(value)


def coerce(uf: dict[str, Any], value: Any, tz: timezone) -> Any:
    """What is stored for ``value``; ``DROPPED`` when the portal would leave the field as it was."""
    if uf["MULTIPLE"] != "Y":
        return _one(uf, value[0] if isinstance(value, list) and value else value, tz)
    items = [_one(uf, item, tz) for item in as_list(value)]
    return [item for item in items if item is not None and item is not DROPPED and item != ""]


def _render_one(uf: dict[str, Any], value: Any, tz: timezone) -> Any:
    kind = uf["USER_TYPE_ID"]
    if kind == "date":
        return render_date(value, tz) if value else ""
    if kind == "datetime":
        return iso(float(value), tz) if value is not None else ""
    if value is None:
        return None
    if kind == "double":
        number = float(value)
        return str(int(number)) if number == int(number) else repr(number)
    return str(value)


def render(uf: dict[str, Any], value: Any, tz: timezone) -> Any:
    """A stored value as crm.*.get/list show it."""
    if uf["MULTIPLE"] == "Y":
        return [_render_one(uf, item, tz) for item in value] if value else False
    return _render_one(uf, value, tz)


def default_value(uf: dict[str, Any], now: float, tz: timezone) -> Any:
    """What a new record holds when the field is not given (the field's default, as CCrmDeal::Add fills it)."""
    kind, default = uf["USER_TYPE_ID"], uf["SETTINGS"].get("DEFAULT_VALUE")
    if kind == "enumeration":
        chosen = [int(item["ID"]) for item in sorted_items(uf) if item.get("DEF") == "Y"]
        return chosen if uf["MULTIPLE"] == "Y" else (chosen[0] if chosen else None)
    if kind in ("date", "datetime") and isinstance(default, dict):
        if default.get("TYPE") == "NOW":
            return parse_date(iso(now, tz)) if kind == "date" else now
        if default.get("TYPE") == "FIXED" and default.get("VALUE"):
            return parse_date(default["VALUE"]) if kind == "date" else parse_datetime(default["VALUE"], tz)
        return None
    if kind == "boolean":
        return 1 if _int(default) else 0
    if default in (None, "") or uf["MULTIPLE"] == "Y":
        return [] if uf["MULTIPLE"] == "Y" else None
    return _one(uf, default, tz)
