"""What a route file says, as frozen values (read by :mod:`.routes`, used by :mod:`.mapping` and :mod:`.check`).

Every value remembers the line it came from, and the lines of its parts (``lines``, keyed by the part's path
below it, e.g. ``"map.C1:NEW"``), so later checks can name the exact line.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Literal

from .entities import DEAL, RecordKind

RuleKind = Literal["const", "template", "copy", "user"]
Scope = Literal["deal", "contact", "company", "status_back"]
RULE_TYPES = ("string", "int", "float", "money", "date", "datetime", "bool", "list")
# Variables of the template context, and the first segment a dotted `from` path may start with.
CONTEXT_NAMES = (
    "deal", "lead", "item", "record", "contact", "company", "products", "source", "target_portal", "route", "target"
)  # fmt: skip
PORTAL_KEYS = ("name", "domain", "member_id")
# What a contact or company is matched by (in the default order), and the source record field each key reads.
MATCH_KEYS: Mapping[str, tuple[str, ...]] = MappingProxyType(
    {"contact": ("phone", "email"), "company": ("tax_number", "phone", "email")}
)
MATCH_SOURCE_FIELDS: Mapping[str, str] = MappingProxyType(
    {"phone": "PHONE", "email": "EMAIL", "tax_number": "tax_number"}
)
# Whose request limits apply to a webhook portal (REFERENCE 2.1); an installed portal's come from its registry row.
PLANS = ("cloud", "enterprise")
TAX_NUMBER = "tax_number"  # a company's first requisite's RQ_INN, read and written as if it were a field
INBOUND = "inbound"  # the source of routes your own systems POST records to (``POST /api/inbound/{route}``)
FIELD_KEY = "field:"  # a match key on any field: "field:UF_CRM_INN", or "field:UF_CRM_INN>UF_CRM_TAX" (source>target)


def field_key(source_field: str, target_field: str | None = None) -> str:
    """The match key ``{field: SOURCE, target: TARGET}`` stands for (the target's field defaults to the same name)."""
    return f"{FIELD_KEY}{source_field}" + (f">{target_field}" if target_field and target_field != source_field else "")


def key_fields(key: str) -> tuple[str, str] | None:
    """``(source field, target field)`` of a field match key, or ``None`` for phone, email, tax_number."""
    if not key.startswith(FIELD_KEY):
        return None
    source_field, _, target_field = key[len(FIELD_KEY) :].partition(">")
    return source_field, target_field or source_field


_WEBHOOK_CODE = re.compile(r"(/rest/\d+/)[^/]+")

_NO_LINES: Mapping[str, int] = MappingProxyType({})


def _no_lines() -> Mapping[str, int]:
    return _NO_LINES


class _Located:
    line: int
    lines: Mapping[str, int]

    def line_of(self, part: str) -> int:
        """The line of a part (``"map.C1:NEW"``, ``"events.stages"``), else of the whole."""
        return self.lines.get(part, self.line)


@dataclass(frozen=True)
class PortalRef(_Located):
    """A portal as the route file names it: an installed b24bridge (domain or member_id) or an incoming webhook; or,
    as a target, your own system's HTTPS endpoint (``endpoint`` and its signing ``secrets``, the newest first)."""

    name: str
    app: str | None
    webhook: str | None
    line: int
    lines: Mapping[str, int] = field(default_factory=_no_lines)
    plan: str = "cloud"
    endpoint: str | None = None
    secrets: tuple[str, ...] = field(default=(), repr=False)
    inbound: bool = False  # ``source: inbound``: your own systems, through ``POST /api/inbound/{route}``

    @property
    def is_portal(self) -> bool:
        return self.endpoint is None and not self.inbound

    def __repr__(self) -> str:
        webhook = None if self.webhook is None else _WEBHOOK_CODE.sub(r"\1***", self.webhook)
        endpoint = None if self.endpoint is None else self.endpoint.partition("?")[0]
        return (
            f"PortalRef(name={self.name!r}, app={self.app!r}, webhook={webhook!r}, endpoint={endpoint!r},"
            f" line={self.line})"
        )


@dataclass(frozen=True)
class Triggers(_Located):
    robot: bool
    hook_secret: str | None = field(repr=False)
    event_stages: tuple[str, ...]
    line: int
    lines: Mapping[str, int] = field(default_factory=_no_lines)  # "events.stages.0" -> line of that stage
    inbound_token: str | None = field(default=None, repr=False)  # bearer token of POST /api/inbound/{route}


@dataclass(frozen=True)
class FieldRule(_Located):
    """How one target field gets its value.

    ``value`` is the constant (``const``), the template source (``template``) or the source path (``copy`` and
    ``user``). ``map`` keys are the source values as text; ``default`` of ``None`` means none was given.
    """

    kind: RuleKind
    value: Any
    map: Mapping[str, Any] | None = None
    default: Any = None
    type: str | None = None
    required: bool = False
    line: int = 0
    lines: Mapping[str, int] = field(default_factory=_no_lines)


@dataclass(frozen=True)
class EntityRule(_Located):
    """The deal's contact or company: looked up in the target by ``match`` (in order), else created with ``fields``.

    ``match`` holds ``phone``, ``email``, ``tax_number`` and :func:`field_key` keys."""

    fields: Mapping[str, FieldRule]
    match: tuple[str, ...]
    line: int
    lines: Mapping[str, int] = field(default_factory=_no_lines)


@dataclass(frozen=True)
class StatusBack(_Located):
    """Target to source: target stage -> source stage, and source deal fields computed from the target deal."""

    stages: Mapping[str, str]
    fields: Mapping[str, FieldRule]
    line: int
    lines: Mapping[str, int] = field(default_factory=_no_lines)  # "stages.C3:WON" -> line


@dataclass(frozen=True)
class Route(_Located):
    """``deal`` holds the rules of the target record's fields (written under the target entity's name, ``deal:`` or
    ``lead:``); the source record is read as ``source_entity`` and written as ``target_entity``."""

    name: str
    source: str
    target: str
    triggers: Triggers
    deal: Mapping[str, FieldRule]
    contact: EntityRule | None
    company: EntityRule | None
    products: bool
    status_back: StatusBack | None
    line: int
    file: str = "routes.yaml"  # as given to load_routes: the prefix of every message about this route
    lines: Mapping[str, int] = field(default_factory=_no_lines)  # "source", "target", "deal", ... -> line of that key
    source_entity: RecordKind = DEAL
    target_entity: RecordKind = DEAL


@dataclass(frozen=True)
class RouteFile:
    path: str
    portals: Mapping[str, PortalRef]
    routes: Mapping[str, Route]


def frozen(mapping: Mapping[str, Any]) -> Mapping[str, Any]:
    return MappingProxyType(dict(mapping))
