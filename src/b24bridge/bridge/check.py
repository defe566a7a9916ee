"""Routes checked against the portals' real field and stage lists (``b24bridge routes check``, and start-up).

Only checks that can be right: names that must exist, fields that must be writable, values that must be in a
portal's list, types that clearly do not fit. What is left unchecked is listed in ``docs/routes.md``.
"""

from __future__ import annotations

import dataclasses
import difflib
from collections.abc import Mapping
from typing import Any

from .check_schema import FieldMap, PortalSchema, fetch_schema, schema_key
from .entities import process_type_id, smart_process
from .route_model import TAX_NUMBER, EntityRule, FieldRule, Route, RouteFile, Scope, key_fields
from .routes_yaml import Problems, Segment, choices
from .templates import referenced_fields

__all__ = ["PortalSchema", "check_route", "check_routes", "fetch_schema"]
_RECORD = ("deal", "lead", "item", "record")  # the words a rule may call the source record by
USER_TYPES = frozenset({"user", "employee"})
_RECORD_IDS = frozenset({"user", "employee", "crm_category", "crm_company", "crm_contact", "crm_lead", "enumeration"})
_NOT_NUMBERS = frozenset({"date", "datetime"})
# Rule type -> target field types it clearly does not fit (anything else may be right: text takes everything).
MISFITS: Mapping[str, frozenset[str]] = {
    "date": _RECORD_IDS | {"integer", "double", "boolean", "money", "crm_status", "crm_currency"},
    "datetime": _RECORD_IDS | {"integer", "double", "boolean", "money", "crm_status", "crm_currency"},
    "int": _NOT_NUMBERS,
    "float": _NOT_NUMBERS | _RECORD_IDS,
    "money": _NOT_NUMBERS | _RECORD_IDS | {"integer", "boolean", "crm_status"},
    "bool": _NOT_NUMBERS | _RECORD_IDS | {"integer", "double", "money"},
}


def check_routes(route_file: RouteFile, schemas: Mapping[str, PortalSchema]) -> list[str]:
    """Every problem of every route whose two portals have a schema in ``schemas`` (by portal name)."""
    problems: list[str] = []
    for route in route_file.routes.values():
        if route.source in schemas and route.target in schemas:
            problems += check_route(route, schemas[route.source], schemas[route.target])
    return problems


def check_route(route: Route, source_schema: PortalSchema, target_schema: PortalSchema) -> list[str]:
    """Problems of one route against its source and target portals, each ``file:line: path: what; allowed: ...``."""
    problems = Problems(route.file)
    mine, why_not_mine = source_schema.process(route.source_entity)
    theirs, why_not_theirs = target_schema.process(route.target_entity)
    for kind, why, end in ((mine, why_not_mine, "source"), (theirs, why_not_theirs, "target")):
        if kind is None:
            key = f"{end}_entity"
            problems.add(
                route.lines.get(key, route.line), ["routes", route.name, key], f"in {getattr(route, end)}", why
            )
    if mine is None or theirs is None:
        return problems.messages  # nothing else can be checked against a process the portal does not have
    resolved = dataclasses.replace(route, source_entity=mine, target_entity=theirs)
    return _RouteCheck(resolved, source_schema, target_schema).run()


class _RouteCheck:
    def __init__(self, route: Route, source: PortalSchema, target: PortalSchema) -> None:
        self.route, self.source, self.target = route, source, target
        self.problems = Problems(route.file)
        self.base: list[Segment] = ["routes", route.name]
        category = route.deal.get("CATEGORY_ID")
        self.category = _int_or_none(category.value) if category is not None and category.kind == "const" else None

    def _named(self, entity: str) -> str:
        """How messages name a record kind: ``smart-process item (Orders, 128)`` for the route's process."""
        kinds = (self.route.source_entity, self.route.target_entity)
        return next((kind.label for kind in kinds if schema_key(kind) == entity), entity)

    def run(self) -> list[str]:
        route = self.route
        self._event_stages()
        self._rules(route.deal, "deal", [*self.base, route.target_entity.name], self.target, route.target)
        if route.contact is not None:
            self._rules(route.contact.fields, "contact", [*self.base, "contact", "fields"], self.target, route.target)
        if route.company is not None:
            self._rules(route.company.fields, "company", [*self.base, "company", "fields"], self.target, route.target)
        for scope, rule in (("contact", route.contact), ("company", route.company)):
            if rule is not None:
                self._match_fields(rule, scope)
        if route.status_back is not None:
            self._status_back_stages()
            self._rules(
                route.status_back.fields,
                "status_back",
                [*self.base, "status_back", "fields"],
                self.source,
                route.source,
            )
        return self.problems.messages

    def _match_fields(self, rule: EntityRule, entity: str) -> None:
        """A ``{field: NAME}`` match key names a field of the source's record and of the target's."""
        for index, key in enumerate(rule.match):
            names = key_fields(key)
            if names is None:
                continue
            where: list[Segment] = [*self.base, entity, "match", index]
            for name, schema, portal in (
                (names[0], self.source, self.route.source),
                (names[1], self.target, self.route.target),
            ):
                fields = schema.fields(entity)
                if name not in fields:
                    what = f"no such field in the {self._named(entity)} of {portal}"
                    self.problems.add(
                        rule.line_of("match"),
                        where,
                        what,
                        _field_choices(name, sorted(fields), f"a {self._named(entity)} field of {portal}"),
                    )

    def _event_stages(self) -> None:
        kind = self.route.source_entity
        triggers, stages = self.route.triggers, self.source.stages_for(kind, None)
        for index, stage in enumerate(triggers.event_stages):
            if stage not in stages:
                path = [*self.base, "triggers", "events", "stages", index]
                what = f"not a {kind.label} stage of {self.route.source}"
                self.problems.add(triggers.line_of(f"events.stages.{index}"), path, what, choices(stage, stages))

    def _status_back_stages(self) -> None:
        assert self.route.status_back is not None
        back, path = self.route.status_back, [*self.base, "status_back", "stages"]
        mine, theirs = self.route.source_entity, self.route.target_entity
        source_stages = self.source.stages_for(mine, None)
        target_stages = self.target.stages_for(theirs, self.category)
        for target_stage, source_stage in back.stages.items():
            line, where = back.line_of(f"stages.{target_stage}"), [*path, target_stage]
            if target_stage not in target_stages:
                what = f"not a {theirs.label} stage of {self.route.target}"
                self.problems.add(line, where, what, choices(target_stage, target_stages))
            if source_stage not in source_stages:
                what = f"{source_stage!r} is not a {mine.label} stage of {self.route.source}"
                self.problems.add(line, where, what, choices(source_stage, source_stages))

    def _rules(
        self, rules: Mapping[str, FieldRule], scope: Scope, path: list[Segment], schema: PortalSchema, portal: str
    ) -> None:
        back, forth = schema_key(self.route.source_entity), schema_key(self.route.target_entity)
        entity = {"status_back": back, "deal": forth}.get(scope, scope)
        for name, rule in rules.items():
            where = [*path, name]
            written = self._written(name, rule, where, schema.fields(entity), entity, portal)
            read = self._read(rule, scope, where)
            if written is None:
                continue
            if rule.kind == "user" and written.get("type") not in USER_TYPES:
                fields = schema.fields(entity).items()
                users = sorted(n for n, f in fields if f.get("type") in USER_TYPES and not f.get("isReadOnly"))
                what = f"a user rule writes a {written.get('type')} field"
                self.problems.add(rule.line, where, what, "a user field: " + ", ".join(users))
            self._fit(rule, where, written, read)
            self._values(rule, where, name, schema, entity, scope)

    def _written(
        self, name: str, rule: FieldRule, where: list[Segment], fields: FieldMap, entity: str, portal: str
    ) -> Mapping[str, Any] | None:
        if entity == "company" and name == TAX_NUMBER:
            return None  # written as a requisite (RQ_INN), not a company field
        writable = sorted(n for n, f in fields.items() if not f.get("isReadOnly"))
        spec = fields.get(name)
        if spec is None:
            what = f"no such field in the {self._named(entity)} of {portal}"
            self.problems.add(
                rule.line,
                where,
                what,
                _field_choices(name, writable, f"a writable {self._named(entity)} field of {portal}"),
            )
        elif spec.get("isReadOnly"):
            self.problems.add(
                rule.line,
                where,
                f"read-only in {portal}",
                _field_choices(name, writable, f"a writable {self._named(entity)} field of {portal}"),
            )
        else:
            return spec
        return None

    def _read(self, rule: FieldRule, scope: Scope, where: list[Segment]) -> Mapping[str, Any] | None:
        """Check that what the rule reads exists; return the source field it copies, if there is one."""
        if rule.kind in ("copy", "user"):
            record, name = _record_and_field(rule.value, scope)
            return self._source_field(record, name, rule.line, where, f"reads {rule.value}")
        if rule.kind == "template":
            for variable, name in referenced_fields(rule.value):
                self._source_field(variable, name, rule.line, where, f"template reads {variable}.{name}")
        return None

    def _source_field(
        self, record: str, name: str, line: int, where: list[Segment], reading: str
    ) -> Mapping[str, Any] | None:
        """The field a rule reads in the source (or, for status back, the target) portal; reported when missing."""
        extra: tuple[str, ...] = ()
        if record in ("target", "status_back"):
            schema, entity, portal, extra = (
                self.target,
                schema_key(self.route.target_entity),
                self.route.target,
                ("url",),
            )
        elif record in (*_RECORD, "contact", "company"):
            entity = schema_key(self.route.source_entity) if record in _RECORD else record
            schema, portal = self.source, self.route.source
            extra = (TAX_NUMBER,) if record == "company" else ()
        else:
            return None  # source, target_portal (checked when the file was read), products, route
        fields = schema.fields(entity)
        spec = fields.get(name)
        if spec is None and name not in extra:
            what = f"{reading}: the {self._named(entity)} of {portal} has no such field"
            described = f"a {self._named(entity)} field of {portal}"
            self.problems.add(line, where, what, _field_choices(name, sorted([*fields, *extra]), described))
        return spec

    def _fit(self, rule: FieldRule, where: list[Segment], written: Mapping[str, Any], read: Any) -> None:
        target_type = str(written.get("type"))
        if rule.type is not None and target_type in MISFITS.get(rule.type, ()):
            self.problems.add(
                rule.line, where, f"type {rule.type} does not fit field type {target_type}", _fitting(target_type)
            )
        multiple = bool(written.get("isMultiple"))
        if not multiple and rule.type == "list":
            self.problems.add(rule.line, where, "type list into a single-value field", "a multiple field")
        elif not multiple and rule.kind == "copy" and rule.type is None and read and read.get("isMultiple"):
            self.problems.add(
                rule.line,
                where,
                "copies a multiple field into a single-value field",
                "a template that picks one value, e.g. {{ deal.UF_CRM_X[0] }}",
            )

    def _values(
        self, rule: FieldRule, where: list[Segment], name: str, schema: PortalSchema, entity: str, scope: Scope
    ) -> None:
        """Constants, map values and defaults must be in the target's list; map keys in the source's."""
        if rule.kind == "user":
            return
        allowed = _allowed_values(schema, entity, name, self.category if schema is self.target else None)
        if allowed is not None:
            candidates = [(rule.line, where, rule.value)] if rule.kind == "const" else []
            candidates += [(rule.line_of(f"map.{k}"), [*where, "map", k], v) for k, v in (rule.map or {}).items()]
            if rule.default is not None:
                candidates.append((rule.line_of("default"), [*where, "default"], rule.default))
            for line, path, value in candidates:
                for item in value if isinstance(value, list) else [value]:
                    if str(item) not in allowed:
                        self.problems.add(line, path, f"{item!r} is not allowed in {name}", choices(str(item), allowed))
        if rule.kind == "copy" and rule.map:
            record, field_name = _record_and_field(rule.value, scope)
            keys_allowed = self._source_values(record, field_name) or ()
            for key in rule.map if keys_allowed else ():
                if key not in keys_allowed:
                    what = f"{key!r} is not a value of the source's {field_name}"
                    self.problems.add(
                        rule.line_of(f"map.{key}"), [*where, "map", key], what, choices(key, keys_allowed)
                    )

    def _source_values(self, record: str, name: str) -> tuple[str, ...] | None:
        if record in ("target", "status_back"):
            return _allowed_values(self.target, schema_key(self.route.target_entity), name, self.category)
        if record in _RECORD:
            return _allowed_values(self.source, schema_key(self.route.source_entity), name, None)
        if record in ("contact", "company"):
            return _allowed_values(self.source, record, name, None)
        return None


def _allowed_values(schema: PortalSchema, entity: str, name: str, category: int | None) -> tuple[str, ...] | None:
    """The values a field takes when it has a list: stages, funnels, reference lists, list items; else ``None``."""
    spec = schema.fields(entity).get(name)
    if spec is None:
        return None
    if entity == "deal" and name == "STAGE_ID":
        return schema.stages_of(category)
    type_id = process_type_id(entity)
    if type_id is not None and name == "STAGE_ID":
        return schema.stages_for(smart_process(type_id), category)
    kind, status_type = spec.get("type"), spec.get("statusType")
    if kind == "crm_category":
        return tuple(str(category_id) for category_id in schema.categories_of(entity))
    if kind == "crm_status" and isinstance(status_type, str) and status_type in schema.statuses:
        return schema.statuses[status_type]
    if kind == "enumeration" and spec.get("items"):
        return tuple(str(item["ID"]) for item in spec["items"])
    return None


def _record_and_field(path: str, scope: Scope) -> tuple[str, str]:
    """``deal.UF_X.0`` -> ("deal", "UF_X"); a plain ``UF_X`` is the scope's record's field."""
    head, _, rest = path.partition(".")
    return (head, rest.split(".")[0]) if rest else (scope, head)


def _int_or_none(value: Any) -> int | None:
    try:
        return int(value) if not isinstance(value, bool) else None
    except (TypeError, ValueError):
        return None


def _field_choices(name: str, names: list[str], described: str) -> str:
    """A close name when there is one (a deal's whole field list is long), else the whole list."""
    close = difflib.get_close_matches(name, names, n=1, cutoff=0.6)
    return f"{described} (did you mean {close[0]}?)" if close else "one of " + ", ".join(names)


def _fitting(target_type: str) -> str:
    fitting = [rule_type for rule_type, misfits in MISFITS.items() if target_type not in misfits]
    return "no type, or " + ", ".join([*fitting, "string"])
