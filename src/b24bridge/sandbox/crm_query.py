"""``filter`` / ``order`` / ``select`` / ``start`` of the legacy ``crm.*.list`` methods, and the camelCase filters
and orders of the newer ``crm.item.list`` / ``crm.type.list``.

Semantics from docs:`api-reference/crm/contacts/crm-contact-list.md` and REFERENCE §2.3: prefixes ``>= > <= < @ !@
% =% %= = != !``, multi-fields exact-match only, page size 50, ``start=-1`` skips the count. The newer methods
(docs crm-item-list.md, crm-type-list.md) add ``!% !=% !%=``, nested groups with ``logic: OR`` and refuse unknown
fields with ``INVALID_ARG_VALUE``.
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


def split_key(key: str, prefixes: tuple[str, ...] = _PREFIXES, upper: bool = True) -> tuple[str, str]:
    for prefix in prefixes:
        if key.startswith(prefix):
            name = key[len(prefix) :]
            return prefix, name.upper() if upper else name
    return "=", key.upper() if upper else key


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
    if field is None or field.type in ("string", "text", "crm_status", "crm_currency", "char", "boolean", "location"):
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
    if op in ("!%", "!=%", "!%="):  # NOT LIKE: the negations of "%" and "=%"
        return not _test(op.replace("!", "") or "%", have, wants, raw)
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


Check = Callable[[dict[str, Any]], bool]


def _check(field: FieldDef | None, cond: Condition, tz: timezone) -> Check:
    """The record test of one condition; ``field`` types the comparison (None: it compares as text)."""
    if field is not None and field.type == "crm_multifield":
        # docs: multi-field filters work on exact matches only (case-insensitive collation, [inferred]).
        wanted = {str(v).strip().lower() for v in cond.values}
        negate = cond.op in ("!", "!=", "!@")

        def multi(rec: dict[str, Any]) -> bool:
            hit = any(str(v["VALUE"]).lower() in wanted for v in rec.get(cond.name) or [])
            return hit != negate

        return multi
    wants = [_comparable(field, v, tz) for v in cond.values]

    def check(rec: dict[str, Any]) -> bool:
        value = rec.get(cond.name)
        if isinstance(value, list):  # multiple id fields / multiple user fields: any element
            if not value:
                return _test(cond.op, None, wants, cond.values)
            return any(_test(cond.op, _stored(field, v), wants, cond.values) for v in value)
        return _test(cond.op, _stored(field, value), wants, cond.values)

    return check


def matcher(fields: Mapping[str, FieldDef], conditions: list[Condition], tz: timezone) -> Check:
    """A record test for ``conditions``; ``fields`` type the comparisons (a field not in it compares as text)."""
    checks: list[Check] = []
    for cond in conditions:
        field = fields.get(cond.name)
        if field is None and not is_user_field(cond.name):
            continue  # [inferred] an unknown filter key is ignored, like an unknown key in fields
        checks.append(_check(field, cond, tz))
    return lambda rec: all(check(rec) for check in checks)


def sort_rows(
    rows: list[dict[str, Any]], raw_order: Any, id_key: str = "ID", name_of: Callable[[str], str] = str.upper
) -> list[dict[str, Any]]:
    """Rows ordered by ``raw_order`` (``{field: ASC|DESC}``, field names through ``name_of``), ties by ``id_key``."""
    if raw_order is None or raw_order == "" or raw_order == []:
        raw_order = {}
    if not isinstance(raw_order, dict):
        raise legacy("Parameter 'order' must be array.")
    rows = sorted(rows, key=lambda r: int(r[id_key]))  # ID ascending is the tie-breaker and the default
    for key, direction in reversed(list(raw_order.items())):
        name = name_of(str(key))
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


# --- the newer methods (crm.item.list, crm.type.list): camelCase names, nested groups, real error codes ----------

# docs crm-item-list.md / crm-type-list.md: the legacy prefixes plus the NOT LIKE ones; longest first.
CAMEL_PREFIXES = ("!=%", "!%=", "!@", "!=", "!%", "=%", "%=", ">=", "<=", ">", "<", "@", "%", "!", "=")
# A field name as the caller wrote it -> the field (its ``name`` is the record's key), None when there is none.
Resolver = Callable[[str], FieldDef | None]


@dataclass(frozen=True)
class Group:
    """Conditions joined by ``logic`` (``AND``, or ``OR`` when the filter says ``logic: OR``)."""

    logic: str
    children: list[Condition | Group]


def invalid_arg(text: str) -> RestError:
    return RestError("INVALID_ARG_VALUE", text)


def upper_name(name: str) -> str:
    """``xmlId`` → ``XML_ID``: how these methods name a field in their errors (docs: ``field 'FIELD'``)."""
    return re.sub(r"(?<=[a-z0-9])(?=[A-Z])", "_", name).upper()


def _value_ok(field: FieldDef, value: Any, tz: timezone) -> bool:
    if value is None or value == "" or isinstance(value, bool):
        return True
    if field.type in INT_TYPES or field.type in ("double", "date", "datetime"):
        return _comparable(field, value, tz) is not None
    return not isinstance(value, dict | list)


def parse_tree(raw: Any, resolve: Resolver, tz: timezone) -> Group:
    """A camelCase filter: ``{field: value, "=field": v, "0": {"logic": "OR", "0": {...}, "1": {...}}}``.

    A numeric key holding a map or a list is a nested group; ``logic`` joins the group's entries. A field the entity
    does not have, or a value its type cannot hold, is refused (docs crm-item-list.md error table).
    """
    if raw in (None, "", []):
        return Group("AND", [])
    if not isinstance(raw, dict | list):
        raise invalid_arg("Invalid filter: filter must be an array")  # [inferred] text
    entries = raw.items() if isinstance(raw, dict) else enumerate(raw)
    logic, children = "AND", list[Condition | Group]()
    for key, value in entries:
        key = str(key)
        if key.lower() == "logic":
            logic = "OR" if str(value).strip().upper() == "OR" else "AND"
            continue
        if key.isdigit() and isinstance(value, dict | list):
            children.append(parse_tree(value, resolve, tz))
            continue
        op, name = split_key(key, CAMEL_PREFIXES, upper=False)
        field = resolve(name)
        if field is None:
            raise invalid_arg(f"Invalid filter: field '{upper_name(name)}' is not allowed in filter")
        values = as_list(value) if isinstance(value, list | dict) else [value]
        if not all(_value_ok(field, v, tz) for v in values):
            raise invalid_arg(f"Invalid filter: field '{upper_name(name)}' has invalid value")
        children.append(Condition(op, field.name, values))
    return Group(logic, children)


def tree_matcher(tree: Group, fields: Mapping[str, FieldDef], tz: timezone) -> Check:
    """The record test of a parsed filter; ``fields`` by record key type the comparisons."""
    checks = [
        tree_matcher(child, fields, tz) if isinstance(child, Group) else _check(fields.get(child.name), child, tz)
        for child in tree.children
    ]
    if tree.logic == "OR" and checks:
        return lambda rec: any(check(rec) for check in checks)
    return lambda rec: all(check(rec) for check in checks)


def camel_order(raw: Any, resolve: Resolver) -> dict[str, str]:
    """``{field: ASC|DESC}`` checked as these methods check it, keyed by record key (for ``sort_rows``)."""
    if raw in (None, "", []):
        return {}
    if not isinstance(raw, dict):
        raise invalid_arg("Invalid order: order must be an array")  # [inferred] text
    order: dict[str, str] = {}
    for key, direction in raw.items():
        field = resolve(str(key))
        if field is None:
            raise invalid_arg(f"Invalid order: field '{upper_name(str(key))}' is not allowed in order")
        wanted = str(direction).strip().upper()
        if wanted not in ("ASC", "DESC"):
            raise invalid_arg(
                f"Invalid order: allowed sort directions are ASC, DESC. But got '{direction}' "
                f"for field '{upper_name(str(key))}'"
            )
        order[field.name] = wanted
    return order
