"""Reading field rules (and the small helpers every part of the route file uses), problems collected with lines."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

from .route_model import CONTEXT_NAMES, PORTAL_KEYS, RULE_TYPES, TAX_NUMBER, FieldRule, RuleKind, Scope, frozen
from .routes_yaml import Entry, Map, Problems, Scalar, Segment, Seq, Tree, choices
from .templates import TemplateProblem, compile_template, is_template, unknown_names

RULE_KEYS: Mapping[str, RuleKind] = {"from": "copy", "const": "const", "template": "template", "user": "user"}
MODIFIERS = ("map", "default", "type", "required")
RULE_FORMS = "a constant, a template string, or {from|const|template|user: ..., map:, default:, type:, required:}"
FIELD_NAME = re.compile(r"[A-Z][A-Z0-9_]*")
_SOURCE_PATH = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z0-9_]+)*")
_USER_ID = re.compile(r"[1-9][0-9]*")
_INVALID = object()  # a value that was reported as a problem


def _context_names(scope: Scope) -> tuple[str, ...]:
    """What templates and dotted paths may read: ``target`` exists only when writing status back."""
    return CONTEXT_NAMES if scope == "status_back" else tuple(name for name in CONTEXT_NAMES if name != "target")


def _unknown_name(name: str, known: Sequence[str], noun: str) -> tuple[str, str]:
    if name == "target":
        return "reads target, which only status_back.fields know", "one of " + ", ".join(known)
    return f"unknown {noun} {name!r}", choices(name, known)


class RuleParser:
    """Helpers over the YAML tree, and the field rules; subclassed by the file parser."""

    def __init__(self, problems: Problems) -> None:
        self.problems = problems

    def mapping(self, tree: Tree, path: list[Segment], line: int, allowed: str) -> Map | None:
        if isinstance(tree, Map):
            return tree
        self.problems.add(line, path, "must be a mapping", allowed)
        return None

    def keys(
        self, node: Map, path: list[Segment], line: int, *, known: Sequence[str], required: Sequence[str] = ()
    ) -> None:
        for key, entry in node.entries.items():
            if key not in known:
                self.problems.add(entry.key_line, [*path, key], "unknown key", choices(key, known))
        for key in required:
            if key not in node.entries:
                self.problems.add(line, path, f"missing {key}", ", ".join(f"{k}:" for k in required) + " required")

    def text(self, node: Map, key: str, path: list[Segment]) -> str | None:
        """A non-empty text value, or ``None``: absent, reported here, or holding an unset ``${NAME}`` (reported)."""
        entry = node.entries.get(key)
        if entry is None or (isinstance(entry.node, Scalar) and entry.node.broken):
            return None
        value = entry.node.value if isinstance(entry.node, Scalar) else None
        if not isinstance(value, str) or not value:
            self.problems.add(entry.key_line, [*path, key], "must be non-empty text", "text")
            return None
        return value

    def flag(self, node: Map, key: str, path: list[Segment]) -> bool:
        entry = node.entries.get(key)
        if entry is None:
            return False
        value = entry.node.value if isinstance(entry.node, Scalar) else None
        if not isinstance(value, bool):
            self.problems.add(entry.key_line, [*path, key], "must be true or false", "true, false")
            return False
        return value

    def rules(self, entry: Entry, path: list[Segment], scope: Scope) -> Mapping[str, FieldRule]:
        node = self.mapping(entry.node, path, entry.key_line, "{FIELD: rule, ...}")
        rules: dict[str, FieldRule] = {}
        for key, item in (node.entries if node else {}).items():
            if not (FIELD_NAME.fullmatch(key) or (scope == "company" and key == TAX_NUMBER)):
                extra = ", or tax_number (the company's requisite RQ_INN)" if scope == "company" else ""
                allowed = f"upper-case Bitrix24 field names such as TITLE or UF_CRM_PARTNER_DEAL{extra}"
                self.problems.add(item.key_line, [*path, key], "not a field name", allowed)
                continue
            rule = self.rule(item, [*path, key], scope)
            if rule is not None:
                rules[key] = rule
        return frozen(rules)

    def rule(self, entry: Entry, path: list[Segment], scope: Scope) -> FieldRule | None:
        node, line = entry.node, entry.key_line
        if isinstance(node, Map):
            return self._rule_map(node, path, line, scope)
        value = self._constant(node, path, line)
        if value is _INVALID:
            return None
        if isinstance(value, str) and is_template(value):
            return FieldRule("template", value, line=line) if self._template_ok(value, path, line, scope) else None
        return FieldRule("const", value, line=line)

    def _rule_map(self, node: Map, path: list[Segment], line: int, scope: Scope) -> FieldRule | None:
        kinds = [key for key in RULE_KEYS if key in node.entries]
        if len(kinds) != 1:
            has = f" (has {', '.join(kinds)})" if kinds else ""
            self.problems.add(line, path, f"needs exactly one of from, const, template, user{has}", RULE_FORMS)
            return None
        kind_key = kinds[0]
        known = (kind_key, "default", "required") if kind_key == "user" else (kind_key, *MODIFIERS)
        self.keys(node, path, line, known=known)
        lines = {key: item.key_line for key, item in node.entries.items()}
        item = node.entries[kind_key]
        value: Any
        if kind_key in ("from", "user"):
            value = self._source_path(item, [*path, kind_key], scope)
        elif kind_key == "const":
            value = self._constant(item.node, [*path, kind_key], item.key_line)
        else:
            value = item.node.value if isinstance(item.node, Scalar) else None
            if not isinstance(value, str):
                self.problems.add(item.key_line, [*path, "template"], "must be text", "a Jinja2 template string")
                value = _INVALID
            elif not self._template_ok(value, [*path, "template"], item.key_line, scope):
                value = _INVALID
        value_map = self._value_map(node.entries.get("map"), [*path, "map"], lines)
        default = self._default(node.entries.get("default"), [*path, "default"], user=kind_key == "user")
        rule_type = self._type(node.entries.get("type"), [*path, "type"])
        required = self.flag(node, "required", path)
        if _INVALID in (value, value_map, default, rule_type):
            return None
        return FieldRule(RULE_KEYS[kind_key], value, value_map, default, rule_type, required, line, frozen(lines))

    def _constant(self, tree: Tree, path: list[Segment], line: int) -> Any:
        if isinstance(tree, Scalar):
            if tree.value is None:
                self.problems.add(line, path, "empty value", RULE_FORMS)
                return _INVALID
            return tree.value
        if isinstance(tree, Seq):
            values = [item.value for item in tree.items if isinstance(item, Scalar) and item.value is not None]
            if len(values) != len(tree.items):
                self.problems.add(line, path, "a list may hold only plain values", "[1, 2] or [a, b]")
                return _INVALID
            return values
        self.problems.add(line, path, "a mapping is not a value here", RULE_FORMS)
        return _INVALID

    def _template_ok(self, source: str, path: list[Segment], line: int, scope: Scope) -> bool:
        try:
            compile_template(source)
        except TemplateProblem as exc:
            self.problems.add(line, path, str(exc), "Jinja2 syntax: {{ deal.TITLE }}, {% if ... %}")
            return False
        known = _context_names(scope)
        unknown = unknown_names(source, known)
        for name in unknown:
            self.problems.add(line, path, *_unknown_name(name, known, "template variable"))
        return not unknown

    def _source_path(self, entry: Entry, path: list[Segment], scope: Scope) -> Any:
        text = entry.node.value if isinstance(entry.node, Scalar) else None
        own = "the target deal's" if scope == "status_back" else f"the source {scope}'s"
        allowed = f"a field of {own} (TITLE, UF_CRM_X) or a dotted path (deal.ID, company.tax_number, source.name)"
        if not isinstance(text, str) or not _SOURCE_PATH.fullmatch(text):
            self.problems.add(entry.key_line, path, "not a field name or a dotted path", allowed)
            return _INVALID
        head, _, rest = text.partition(".")
        if not rest:
            if FIELD_NAME.fullmatch(text) or text == TAX_NUMBER:
                return text
            self.problems.add(entry.key_line, path, f"{text!r} is not a field name", allowed)
            return _INVALID
        names = tuple(name for name in _context_names(scope) if name != "route")
        if head not in names:
            self.problems.add(entry.key_line, path, *_unknown_name(head, names, "record"))
            return _INVALID
        if head in ("source", "target_portal") and rest not in PORTAL_KEYS:
            self.problems.add(entry.key_line, path, f"{head} has no {rest!r}", choices(rest, PORTAL_KEYS))
            return _INVALID
        return text

    def _value_map(self, entry: Entry | None, path: list[Segment], lines: dict[str, int]) -> Any:
        if entry is None:
            return None
        node = self.mapping(entry.node, path, entry.key_line, "{source value: target value, ...}")
        if node is None:
            return _INVALID
        values: dict[str, Any] = {}
        for key, item in node.entries.items():
            values[key] = self._constant(item.node, [*path, key], item.key_line)
            lines[f"map.{key}"] = item.key_line
        return _INVALID if _INVALID in values.values() else frozen(values)

    def _default(self, entry: Entry | None, path: list[Segment], *, user: bool) -> Any:
        if entry is None:
            return None
        value = self._constant(entry.node, path, entry.key_line)
        if (
            user
            and value is not _INVALID
            and not (
                (isinstance(value, int) and not isinstance(value, bool) and value > 0)
                or (isinstance(value, str) and _USER_ID.fullmatch(value))
            )
        ):
            self.problems.add(entry.key_line, path, "not a user id", "a target user's ID such as 1")
            return _INVALID
        return int(value) if user and value is not _INVALID else value

    def _type(self, entry: Entry | None, path: list[Segment]) -> Any:
        if entry is None:
            return None
        value = entry.node.value if isinstance(entry.node, Scalar) else None
        if value not in RULE_TYPES:
            self.problems.add(entry.key_line, path, f"unknown type {value!r}", choices(str(value), RULE_TYPES))
            return _INVALID
        return value
