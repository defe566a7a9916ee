"""Source records to target fields, by a route's rules: pure functions, no I/O.

The pipeline reads the source deal (with its contact, company, product rows and the users it names), builds a
:class:`MappingContext`, and calls :func:`map_fields` per entity; :func:`changed` and :func:`fingerprint` tell
what to write again on an update.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from decimal import Decimal
from typing import Any

from ..observability import redact_text
from .coerce import coerce, quote, to_bool, to_float, to_int
from .route_model import MATCH_SOURCE_FIELDS, TAX_NUMBER, EntityRule, FieldRule, Route, Scope, StatusBack, key_fields
from .templates import Record, TemplateProblem, render

MULTIFIELDS = frozenset({"PHONE", "EMAIL", "WEB", "IM", "LINK"})
_WITH_MULTIFIELDS = ("contact", "company")  # deals have none
_MAP_KEYS_SHOWN = 20


class MappingError(ValueError):
    """Why a record cannot be mapped: per target field, all problems at once. ``str()`` reads
    ``TITLE: deal has no field 'TITEL'; STAGE_ID: 'C1:LOSE' is not in the map; allowed: ...`` and quotes at most
    40 characters of any value, so it is safe to show in a workflow log."""

    def __init__(self, field: str, message: str, *, more: Sequence[tuple[str, str]] = ()) -> None:
        # A value quoted from a record could hold a webhook URL: masked as the logs mask it.
        self.problems: tuple[tuple[str, str], ...] = tuple(
            (name, redact_text(text)) for name, text in ((field, message), *more)
        )
        self.field, self.message = self.problems[0]
        super().__init__("; ".join(f"{name}: {text}" for name, text in self.problems))

    @classmethod
    def combine(cls, errors: Sequence[MappingError]) -> MappingError:
        problems = [problem for error in errors for problem in error.problems]
        (first_field, first_message), *more = problems
        return cls(first_field, first_message, more=more)


@dataclass(frozen=True)
class MappingContext:
    """What rules read. Records are as ``crm.*.get`` returns them; ``company`` carries ``tax_number`` (its first
    requisite's RQ_INN) when it has one; ``users`` maps source user ids to the target users with the same e-mail;
    ``target`` (status back only) is the target deal plus ``url``."""

    deal: Mapping[str, Any] | None = None
    contact: Mapping[str, Any] | None = None
    company: Mapping[str, Any] | None = None
    products: Sequence[Mapping[str, Any]] = ()
    source: Mapping[str, Any] | None = None  # {name, domain, member_id} of the source portal
    target_portal: Mapping[str, Any] | None = None  # the same of the target portal
    route: str = ""
    users: Mapping[int, int] = field(default_factory=dict)
    target: Mapping[str, Any] | None = None
    entity: str = "deal"  # the source record's kind: rules may call it by its name (lead), or record

    def record(self, name: str) -> Any:
        """The record a scope's rules read (``status_back`` reads the target record), or a context value by name.
        The source record answers to ``deal`` (the name routes used before leads), its kind's name and ``record``."""
        if name == "status_back":
            return self.target
        if name in (self.entity, "record", "deal"):
            return self.deal
        return getattr(self, name) if name in _RECORD_NAMES or name == "products" else None

    def template_variables(self) -> dict[str, Any]:
        def wrap(label: str, fields: Mapping[str, Any] | None) -> Record | None:
            return None if fields is None else Record(label, fields)

        variables: dict[str, Any] = {name: wrap(name, self.record(name)) for name in _RECORD_NAMES}
        variables[self.entity] = variables["record"] = wrap(self.entity, self.deal)
        variables["products"] = [Record(f"products[{i}]", row) for i, row in enumerate(self.products)]
        variables["route"] = self.route
        return variables


_RECORD_NAMES = ("deal", "contact", "company", "source", "target_portal", "target")


def map_fields(rules: Mapping[str, FieldRule], scope: Scope, context: MappingContext) -> dict[str, Any]:
    """Target field -> value for every rule that yields one; a rule whose value is empty (and has no default) is
    left out. Raises one :class:`MappingError` holding every field's problem."""
    variables = context.template_variables()
    values: dict[str, Any] = {}
    errors: list[MappingError] = []
    for name, rule in rules.items():
        try:
            value = _apply(rule, scope, context, variables)
            if value is not _OMIT:
                values[name] = multifield(value) if name in MULTIFIELDS and scope in _WITH_MULTIFIELDS else value
        except (ValueError, TemplateProblem) as exc:
            errors.append(MappingError(name, str(exc)))
    if errors:
        raise MappingError.combine(errors)
    return values


_OMIT = object()


def _apply(rule: FieldRule, scope: Scope, context: MappingContext, variables: Mapping[str, Any]) -> Any:
    if rule.kind == "const":
        value = rule.value
    elif rule.kind == "template":
        value = render(rule.value, variables)
    else:
        value = read_path(rule.value, scope, context)
        if rule.kind == "user":
            value = _target_user(value, context.users)
    if rule.kind != "const" and _is_empty(value):  # a constant is meant as written, "" included
        if rule.default is not None:
            value = rule.default
        elif rule.required:
            reason = "no target user matches by e-mail" if rule.kind == "user" else "the value is empty"
            raise ValueError(f"required, but {reason}")
        else:
            return _OMIT
    elif rule.map is not None:
        value = [_mapped(item, rule) for item in value] if isinstance(value, list) else _mapped(value, rule)
    if rule.type is not None and value != "":  # "" clears a field of any type
        value = coerce(value, rule.type)
    _check_finite(value)
    return value


def read_path(path: str, scope: Scope, context: MappingContext) -> Any:
    """The value at ``path``: a field of the scope's record, or a dotted path into the context.

    Missing is ``None``, and so is Bitrix24's ``false`` for an empty multiple field; a multifield reads as
    ``[{VALUE, VALUE_TYPE}]``."""
    head, _, rest = path.partition(".")
    if rest:
        value: Any = context.products if head == "products" else context.record(head)
        segments = rest.split(".")
    else:
        value, segments = context.record(scope), [path]
    for segment in segments:
        if isinstance(value, Mapping):
            value = value.get(segment)
        elif isinstance(value, Sequence) and not isinstance(value, str) and segment.isdigit():
            value = value[int(segment)] if int(segment) < len(value) else None
        else:
            return None
    if value is False:
        return None
    if isinstance(value, list) and value and all(isinstance(item, Mapping) and "VALUE" in item for item in value):
        return multifield(value)  # never carry the source's multifield IDs into another portal
    return value


def _target_user(source_user: Any, users: Mapping[int, int]) -> int | None:
    if _is_empty(source_user):
        return None
    try:
        source_id = to_int(source_user)
    except ValueError:
        raise ValueError(f"{quote(source_user)} is not a user id") from None
    return users.get(source_id)


def _mapped(value: Any, rule: FieldRule) -> Any:
    assert rule.map is not None
    key = "Y" if value is True else "N" if value is False else str(value)
    if key in rule.map:
        return rule.map[key]
    if rule.default is not None:
        return rule.default
    keys = list(rule.map)
    shown = ", ".join(keys[:_MAP_KEYS_SHOWN]) + (", ..." if len(keys) > _MAP_KEYS_SHOWN else "")
    raise ValueError(f"{quote(value)} is not in the map; allowed: {shown}")


def _is_empty(value: Any) -> bool:
    return value is None or (isinstance(value, str) and not value.strip()) or value in ([], {})


def _check_finite(value: Any) -> None:
    items = value if isinstance(value, list) else [value]
    if any(isinstance(item, float) and not math.isfinite(item) for item in items):
        raise ValueError("not a finite number")


def user_sources(rules: Mapping[str, FieldRule]) -> set[str]:
    """The source paths ``user`` rules read (``ASSIGNED_BY_ID``, ``deal.CREATED_BY_ID``)."""
    return {rule.value for rule in rules.values() if rule.kind == "user"}


def source_user_ids(rules: Mapping[str, FieldRule], scope: Scope, context: MappingContext) -> set[int]:
    """The source users the ``user`` rules will look up: resolve these (by e-mail) before :func:`map_fields`."""
    found: set[int] = set()
    for path in user_sources(rules):
        try:
            found.add(to_int(read_path(path, scope, context)))
        except ValueError:
            continue  # empty or not an id: map_fields reports it where it matters
    return found


def multifield(values: Any) -> list[dict[str, str]]:
    """Phones, e-mails... as ``crm.*.add`` takes them: ``[{VALUE, VALUE_TYPE}]`` (no source IDs, no empty values,
    no repeats). Takes what ``crm.*.get`` returns, one value, or a list of plain values (``VALUE_TYPE`` WORK)."""
    items = values if isinstance(values, list | tuple) else [] if values is None else [values]
    result: list[dict[str, str]] = []
    for item in items:
        if isinstance(item, Mapping):
            value, value_type = item.get("VALUE"), item.get("VALUE_TYPE") or "WORK"
        else:
            value, value_type = item, "WORK"
        if isinstance(value, bool) or not isinstance(value, str | int) or not isinstance(value_type, str):
            raise ValueError(f"{quote(item)} is not a phone, e-mail or link")
        entry = {"VALUE": str(value).strip(), "VALUE_TYPE": value_type}
        if entry["VALUE"] and entry not in result:
            result.append(entry)
    return result


def match_lookups(rule: EntityRule, record: Mapping[str, Any] | None) -> list[tuple[str, list[str]]]:
    """What to look the target contact or company up by, in the rule's order: ``[("phone", ["+1555..."]), ...]``
    from the source record (keys without values left out). A field key reads the source's field: a number or text,
    or the values of a multiple field."""
    lookups: list[tuple[str, list[str]]] = []
    for key in rule.match:
        fields = key_fields(key)
        value = None if record is None else record.get(fields[0] if fields else MATCH_SOURCE_FIELDS[key])
        if key == TAX_NUMBER or fields is not None:
            items = value if isinstance(value, list) else [value]
            texts = [str(item).strip() for item in items if _is_match_scalar(item) and str(item).strip()]
        else:
            texts = [item["VALUE"] for item in multifield(value)]
        if texts:
            lookups.append((key, texts))
    return lookups


def reads_tax_number(route: Route) -> bool:
    """Whether anything in the route uses the company's tax number (a match key, a rule writing or reading it): only
    then does a delivery read the source company's requisites."""
    company = route.company
    if company is None:
        return False
    if TAX_NUMBER in company.match or TAX_NUMBER in company.fields:
        return True
    rules = [*route.deal.values(), *company.fields.values()]
    rules += [*route.contact.fields.values()] if route.contact else []
    rules += [*route.status_back.fields.values()] if route.status_back else []
    return any(TAX_NUMBER in str(rule.value) for rule in rules)


def _is_match_scalar(value: Any) -> bool:
    return isinstance(value, str | int | float | Decimal) and not isinstance(value, bool)


def status_back_stage(status_back: StatusBack, target_stage: str | None) -> str | None:
    """The source stage for the target deal's stage, or ``None`` when the route maps none."""
    return None if target_stage is None else status_back.stages.get(target_stage)


_PRODUCT_NUMBERS = (("PRICE", 0.0), ("QUANTITY", 1.0), ("DISCOUNT_RATE", 0.0), ("DISCOUNT_SUM", 0.0))


def map_products(rows: Iterable[Any]) -> list[dict[str, Any]]:
    """``crm.deal.productrows.get`` rows -> ``crm.deal.productrows.set`` rows: free-text rows (``PRODUCT_ID`` 0,
    catalogs differ between portals) with name, price, quantity, discount, tax, measure and sort."""
    result: list[dict[str, Any]] = []
    errors: list[MappingError] = []
    for index, row in enumerate(rows):
        if not isinstance(row, Mapping):
            errors.append(MappingError(f"products[{index}]", "not a product row"))
            continue
        out: dict[str, Any] = {"PRODUCT_ID": 0}
        name = row.get("PRODUCT_NAME") or row.get("ORIGINAL_PRODUCT_NAME")
        if isinstance(name, str | int) and str(name).strip():
            out["PRODUCT_NAME"] = str(name)
        conversions: list[tuple[str, Any, Any]] = [(key, to_float, default) for key, default in _PRODUCT_NUMBERS]
        conversions += [("DISCOUNT_TYPE_ID", to_int, 2), ("TAX_RATE", to_float, None), ("TAX_INCLUDED", to_bool, "N")]
        conversions += [("MEASURE_CODE", to_int, None), ("MEASURE_NAME", str, None), ("SORT", to_int, 10 * (index + 1))]
        for key, convert, default in conversions:
            value = row.get(key)
            try:
                converted = default if _is_empty(value) else convert(value)
            except ValueError as exc:
                errors.append(MappingError(f"products[{index}].{key}", str(exc)))
                continue
            if converted is not None:
                out[key] = converted
        result.append(out)
    if errors:
        raise MappingError.combine(errors)
    return result


def canonical_json(values: Any) -> str:
    return json.dumps(values, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=_json_default)


def _json_default(value: Any) -> Any:
    if isinstance(value, Decimal | date | datetime):
        return str(value)
    if isinstance(value, Mapping):
        return dict(value)
    raise TypeError(f"{type(value).__name__} is not a mapped value")


def fingerprint(values: Mapping[str, Any]) -> str:
    """A stable SHA-256 of the values (canonical JSON: sorted keys, no spaces): equal values, equal fingerprints."""
    return hashlib.sha256(canonical_json(values).encode()).hexdigest()


def changed(new: Mapping[str, Any], last: Mapping[str, Any]) -> dict[str, Any]:
    """The fields of ``new`` whose value differs from what was last delivered (all of them when ``last`` is empty)."""
    return {
        name: value
        for name, value in new.items()
        if name not in last or canonical_json(value) != canonical_json(last[name])
    }
