"""``filter`` / ``order`` / ``select`` / ``start`` of the legacy ``crm.*.list`` methods.

Semantics from docs:`api-reference/crm/contacts/crm-contact-list.md` and REFERENCE §2.3: prefixes ``>= > <= < @ !@
% =% %= = != !``, multi-fields exact-match only, page size 50, ``start=-1`` skips the count.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import timezone
from typing import Any

from .crm_fields import INT_TYPES, EntityDef, FieldDef, is_user_field
from .crm_values import parse_date, parse_datetime
from .errors import RestError, legacy
from .wire import as_list

PAGE = 50
# Longest prefixes first so that ">=" is not read as ">" followed by "=FIELD".
_PREFIXES = ("!@", "!=", "=%", "%=", ">=", "<=", ">", "<", "@", "%", "!", "=")


@dataclass(frozen=True)
class Condition:
    op: str
    name: str
    values: list[Any]


def split_key(key: str) -> tuple[str, str]:
    for prefix in _PREFIXES:
        if key.startswith(prefix):
            return prefix, key[len(prefix) :].upper()
    return "=", key.upper()


def parse_filter(raw: Any) -> list[Condition]:
    if raw is None or raw == "":
        return []
    if not isinstance(raw, dict):
        if isinstance(raw, list) and not raw:
            return []  # an empty PHP array is a list on the wire
        raise legacy("Parameter 'filter' must be array.")
    conditions = []
    for key, value in raw.items():
        op, name = split_key(str(key))
        # [inferred] a list value in a plain "="/"!" condition works as IN / NOT IN, as in CCrm*::GetListEx.
        values = as_list(value) if isinstance(value, list | dict) else [value]
        conditions.append(Condition(op, name, values))
    return conditions


def _comparable(field: FieldDef | None, value: Any, tz: timezone) -> Any:
    """Bring a filter value to the stored representation of the field so that comparisons are typed."""
    if value is None or value == "":
        return None
    if field is None:
        return str(value).lower()
    if field.type in INT_TYPES:
        try:
            return int(float(str(value)))
        except ValueError:
            return None
    if field.type == "double":
        try:
            return float(str(value))
        except ValueError:
            return None
    if field.type == "datetime":
        return parse_datetime(value, tz)
    if field.type == "date":
        return parse_date(value)
    return str(value).lower()


def _stored(field: FieldDef | None, value: Any) -> Any:
    if value is None or value == "":
        return None
    if field is None or field.type in ("string", "crm_status", "crm_currency", "char", "location"):
        return str(value).lower()  # MySQL's case-insensitive collation
    return value


def _like(pattern: str) -> re.Pattern[str]:
    parts = (re.escape(p) for p in pattern.lower().split("%"))
    return re.compile("^" + ".*".join(parts).replace("_", ".") + "$", re.S)


def _test(op: str, have: Any, wants: list[Any], raw: list[Any]) -> bool:
    if op in ("=", "@"):
        return any(have == w for w in wants)
    if op in ("!", "!=", "!@"):
        return all(have != w for w in wants)
    if op == "%":
        return have is not None and any(str(r).lower() in str(have) for r in raw if str(r) != "")
    if op in ("=%", "%="):
        return have is not None and any(_like(str(r)).match(str(have)) for r in raw)
    if have is None:
        return False
    for want in wants:
        if want is None:
            continue
        try:
            ok = {">": have > want, ">=": have >= want, "<": have < want, "<=": have <= want}[op]
        except TypeError:
            ok = False
        if ok:
            return True
    return False


def matcher(
    fields: Mapping[str, FieldDef], conditions: list[Condition], tz: timezone
) -> Callable[[dict[str, Any]], bool]:
    """A record test for ``conditions``; ``fields`` type the comparisons (a field not in it compares as text)."""
    checks: list[Callable[[dict[str, Any]], bool]] = []
    for cond in conditions:
        field = fields.get(cond.name)
        if field is None and not is_user_field(cond.name):
            continue  # [inferred] an unknown filter key is ignored, like an unknown key in fields
        if field is not None and field.type == "crm_multifield":
            # docs: multi-field filters work on exact matches only (case-insensitive collation, [inferred]).
            wanted = {str(v).strip().lower() for v in cond.values}
            negate = cond.op in ("!", "!=", "!@")

            def multi(rec: dict[str, Any], name: str = cond.name, w: set[str] = wanted, neg: bool = negate) -> bool:
                hit = any(str(v["VALUE"]).lower() in w for v in rec.get(name) or [])
                return hit != neg

            checks.append(multi)
            continue
        wants = [_comparable(field, v, tz) for v in cond.values]

        def check(rec: dict[str, Any], c: Condition = cond, f: FieldDef | None = field, w: list[Any] = wants) -> bool:
            value = rec.get(c.name)
            if isinstance(value, list):  # multiple id fields / multiple user fields: any element
                return (
                    any(_test(c.op, _stored(f, v), w, c.values) for v in value)
                    if value
                    else _test(c.op, None, w, c.values)
                )
            return _test(c.op, _stored(f, value), w, c.values)

        checks.append(check)
    return lambda rec: all(check(rec) for check in checks)


def sort_rows(rows: list[dict[str, Any]], raw_order: Any) -> list[dict[str, Any]]:
    if raw_order is None or raw_order == "" or raw_order == []:
        raw_order = {}
    if not isinstance(raw_order, dict):
        raise legacy("Parameter 'order' must be array.")
    rows = sorted(rows, key=lambda r: int(r["ID"]))  # ID ascending is the tie-breaker and the default
    for key, direction in reversed(list(raw_order.items())):
        name = str(key).upper()
        desc = str(direction).upper() == "DESC"
        # NULLs sort first ascending and last descending, like MySQL.
        present = [r for r in rows if r.get(name) not in (None, "")]
        absent = [r for r in rows if r.get(name) in (None, "")]
        present.sort(key=_keyer(name), reverse=desc)
        rows = present + absent if desc else absent + present
    return rows


def _keyer(name: str) -> Callable[[dict[str, Any]], Any]:
    return lambda row: _sort_key(row[name])


def _sort_key(value: Any) -> Any:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return (0, value, "")
    return (1, 0, str(value).lower())


def select_names(entity: EntityDef, raw_select: Any, record_keys: Iterable[str]) -> list[str]:
    """docs: default ``["*", "UF_*"]``; ``*`` = all fields but user and multi-fields; multi-fields by name."""
    wanted = [str(s).upper() for s in as_list(raw_select)] or ["*", "UF_*"]
    names: list[str] = ["ID"]  # [inferred] the portal always returns ID, whatever the select
    for item in wanted:
        if item == "*":
            names.extend(f.name for f in entity.fields if not f.hidden and f.type != "crm_multifield")
            names.extend(k for k in record_keys if k.startswith("PARENT_ID_"))
        elif item == "UF_*":
            names.extend(k for k in record_keys if k.startswith("UF_"))
        elif (item in entity.by_name and not entity.by_name[item].hidden) or is_user_field(item):
            names.append(item)
    return list(dict.fromkeys(names))


def page_of(rows: list[Any], raw_start: Any) -> tuple[list[Any], int, int | None]:
    """(page, total, next): ``start=-1`` → no COUNT, ``total`` 0, no ``next`` (REFERENCE §2.3)."""
    try:
        start = int(str(raw_start if raw_start not in (None, "") else 0).strip())
    except ValueError as exc:
        raise RestError("", "Parameter 'start' must be integer.") from exc  # [inferred] text as in user.get
    if start < 0:
        return rows[:PAGE], 0, None
    page = rows[start : start + PAGE]
    nxt = start + len(page) if start + len(page) < len(rows) else None
    return page, len(rows), nxt
