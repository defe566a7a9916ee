"""Values of legacy CRM fields: what is stored, how it is read back, and the multi-field update rules.

Stored values are JSON-friendly natives (ints, floats, ``YYYY-MM-DD`` dates, unix timestamps for datetimes) so
that a world can be saved; the legacy methods render them the PHP way: every scalar as a string.
"""

from __future__ import annotations

import re
from dataclasses import replace
from datetime import UTC, date, datetime, timezone
from typing import Any

from .crm_fields import EMAIL_TITLES, INT_TYPES, FieldDef
from .errors import RestError
from .state import World
from .wire import as_list, iso

_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s.]+$")
_DMY = re.compile(r"^(\d{1,2})\.(\d{1,2})\.(\d{4})")  # the portal's locale format, e.g. "11.11.2001" (docs example)
_TRUE = {"Y", "1", "TRUE"}
MULTI_COUNTER = "CRM_MULTIFIELD"  # one global sequence for multi-field value IDs, as on the portal


def parse_date(value: Any) -> str | None:
    """``YYYY-MM-DD``, an ISO datetime (its date part) or ``DD.MM.YYYY`` → ``YYYY-MM-DD``."""
    text = str(value or "").strip()
    if not text:
        return None
    match = _DMY.match(text)
    if match:
        day, month, year = (int(g) for g in match.groups())
        return date(year, month, day).isoformat()
    try:
        return date.fromisoformat(text[:10]).isoformat()
    except ValueError:
        return None


def parse_datetime(value: Any, tz: timezone) -> float | None:
    """An ISO datetime (offset optional: the portal's own zone then) or a date → unix timestamp."""
    text = str(value or "").strip()
    if not text:
        return None
    day = _DMY.match(text)
    if day:
        text = parse_date(text) or ""
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=tz)
    return moment.timestamp()


def render_date(value: str, tz: timezone) -> str:
    """Dates come back as midnight UTC shown in the portal's offset, e.g. ``2024-08-30T02:00:00+02:00`` —
    that is what the crm.deal.get / crm.contact.get docs examples show for BEGINDATE and BIRTHDATE."""
    midnight = datetime.fromisoformat(value).replace(tzinfo=UTC)
    return iso(midnight.timestamp(), tz)


def _number(value: Any) -> float | None:
    try:
        return float(str(value).replace(",", ".").strip())
    except ValueError:
        return None


def coerce(field: FieldDef, value: Any, tz: timezone) -> Any:
    """An incoming scalar (a string from form encoding, a number or string from JSON) → stored value."""
    kind = field.type
    if kind in INT_TYPES:
        if field.multiple:
            return [n for n in (_int(v) for v in as_list(value)) if n is not None]
        return _int(value)
    if kind == "double":
        number = _number(value)
        return 0.0 if number is None else number
    if kind in ("char", "boolean"):
        return "Y" if str(value).strip().upper() in _TRUE else "N"
    if kind == "date":
        return parse_date(value)
    if kind == "datetime":
        return parse_datetime(value, tz)
    if kind == "file":
        return None  # [inferred] files are not emulated; the field reads back as null like an empty photo
    if value is None or isinstance(value, dict | list):
        return None
    return str(value)


def _int(value: Any) -> int | None:
    if isinstance(value, bool) or value is None:
        return None
    try:
        return int(str(value).strip())
    except ValueError:
        number = _number(value)
        return int(number) if number is not None else None


def render(field: FieldDef, value: Any, tz: timezone) -> Any:
    """Stored value → what legacy get/list return: strings, ``null`` for unset, dates in ISO 8601."""
    if value is None:
        return "" if field.empty_text else None
    kind = field.type
    if kind == "crm_multifield":
        return [{"ID": str(v["ID"]), "VALUE_TYPE": v["VALUE_TYPE"], "VALUE": v["VALUE"], "TYPE_ID": v["TYPE_ID"]}
                for v in value]  # fmt: skip
    if kind in INT_TYPES and field.multiple:
        return [str(v) for v in value]
    if kind == "double":
        return f"{float(value):.2f}"
    if kind == "date":
        return render_date(value, tz)
    if kind == "datetime":
        return iso(float(value), tz)
    return str(value)


def php_number(value: float | None) -> float | int | None:
    """A money amount as PHP's ``json_encode`` prints it: two decimals, no trailing ``.0`` (``"PRICE": 100``)."""
    if value is None:
        return None
    value = round(value, 2)
    return int(value) if value == int(value) else value


def render_native(field: FieldDef, value: Any, tz: timezone) -> Any:
    """Stored value → what the newer methods (``crm.item.*``) return: JSON natives, ``Y``/``N`` booleans, dates and
    datetimes in ISO 8601 in the portal's offset (docs crm-item-get.md example), ``[]`` for an empty multiple field."""
    if field.multiple:
        return [render_native(replace(field, multiple=False), v, tz) for v in value or []]
    if value is None:
        return None
    kind = field.type
    if kind in INT_TYPES:
        return int(value)
    if kind == "double":
        return php_number(float(value))
    if kind == "date":
        return render_date(value, tz)
    if kind == "datetime":
        return iso(float(value), tz)
    return str(value)


def render_loose(value: Any) -> Any:
    """User fields keep their shape; scalars are strings, as PHP hands them back from the database."""
    if isinstance(value, list):
        return [render_loose(v) for v in value]
    if isinstance(value, dict):
        return {k: render_loose(v) for k, v in value.items()}
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, int | float):
        return str(value)
    return value


# --- multi-fields -----------------------------------------------------------------------------------------


def _check_value(type_id: str, value_type: str, value: str) -> None:
    if type_id == "EMAIL" and not _EMAIL.match(value):
        # docs (crm-contact-add.md): ERROR_CORE "The field `Work e-mail` contains an invalid address";
        # [inferred] the other VALUE_TYPEs use their own field title in the same sentence.
        title = EMAIL_TITLES.get(value_type, "E-mail")
        raise RestError("ERROR_CORE", f"The field `{title}` contains an invalid address")


def _entries(raw: Any) -> list[dict[str, Any]]:
    """A multi-field arrives as a list of maps (JSON) or a map of maps (PHP brackets ``[n0][VALUE]``)."""
    if isinstance(raw, dict) and "VALUE" in raw:
        raw = [raw]
    return [e for e in as_list(raw) if isinstance(e, dict)]


def apply_multi(world: World, type_id: str, current: list[dict[str, Any]], raw: Any) -> list[dict[str, Any]]:
    """docs crm-contact-update.md: no ID → add; ID + VALUE → change; ID + DELETE=Y, empty VALUE or no VALUE → delete.

    Values are validated before anything is changed, so a bad e-mail leaves the record untouched.
    """
    result = [dict(v) for v in current]
    by_id = {v["ID"]: v for v in result}
    for entry in _entries(raw):
        entry = {str(k).upper(): v for k, v in entry.items()}
        value = str(entry.get("VALUE") or "").strip()
        # [inferred] a missing VALUE_TYPE is stored as WORK (OTHER for IM, USER for LINK), the UI's defaults;
        # an unknown VALUE_TYPE is stored as sent: the portal does not reject it (no documented error).
        default_type = {"IM": "OTHER", "LINK": "USER"}.get(type_id, "WORK")
        value_type = str(entry.get("VALUE_TYPE") or default_type).upper()
        entry_id = _int(entry.get("ID"))
        if entry_id is not None and entry_id in by_id:
            target = by_id[entry_id]
            if str(entry.get("DELETE", "")).upper() == "Y" or not value:
                result.remove(target)
                del by_id[entry_id]
                continue
            _check_value(type_id, value_type, value)
            target["VALUE"] = value
            target["VALUE_TYPE"] = value_type
            continue
        if entry_id is not None or not value:
            continue  # an unknown ID or an empty new value is ignored
        _check_value(type_id, value_type, value)
        new = {"ID": world.next_id(MULTI_COUNTER), "VALUE_TYPE": value_type, "VALUE": value, "TYPE_ID": type_id}
        result.append(new)
    return result


def check_multi(type_id: str, raw: Any) -> None:
    """Validate new values of a multi-field without touching state (used before an add takes its ID)."""
    for entry in _entries(raw):
        entry = {str(k).upper(): v for k, v in entry.items()}
        value = str(entry.get("VALUE") or "").strip()
        if value and entry.get("ID") in (None, ""):
            _check_value(type_id, str(entry.get("VALUE_TYPE") or "WORK").upper(), value)
