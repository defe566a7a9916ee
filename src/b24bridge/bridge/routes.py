"""The route file (``B24BRIDGE_ROUTES``, default ``./routes.yaml``): read, validated, every problem reported at once.

Each problem reads ``routes.yaml:12: routes.partner-to-acme.deal.STAGE_ID: what is wrong; allowed: what is``; no
message quotes a webhook URL or a hook secret. The format is documented in ``docs/routes.md``.
"""

from __future__ import annotations

import ipaddress
import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from urllib.parse import urlsplit

from .entities import DEAL, FIRST_PROCESS_TYPE_ID, KINDS, RecordKind, smart_process
from .route_model import (
    INBOUND,
    MATCH_KEYS,
    PLANS,
    EntityRule,
    FieldRule,
    PortalRef,
    Route,
    RouteFile,
    Scope,
    StatusBack,
    Triggers,
    field_key,
    frozen,
)
from .routes_systems import INBOUND_REF, SystemsParser
from .routes_yaml import Entry, Map, Problems, Scalar, Segment, Seq, Tree, choices, parse
from .rules_parse import FIELD_NAME

__all__ = [
    "EntityRule",
    "FieldRule",
    "PortalRef",
    "Route",
    "RouteFile",
    "RoutesError",
    "StatusBack",
    "Triggers",
    "load_routes",
    "parse_routes",
]

NAME = re.compile(r"[a-z0-9][a-z0-9_-]{0,62}")
NAME_ALLOWED = "[a-z0-9][a-z0-9_-]{0,62}"
MIN_SECRET = 16
_SECRET = re.compile(r"[A-Za-z0-9._~-]+")
_APP_REF = re.compile(r"[0-9a-f]{32}|[a-z0-9]([a-z0-9.-]*[a-z0-9])?(:\d{1,5})?")
_WEBHOOK_PATH = re.compile(r"/rest/\d+/[^/]+/?")
WEBHOOK_ALLOWED = "https://<portal>/rest/<user id>/<code>/ (plain http only on loopback, for the sandbox)"
TRIGGER_ALLOWED = "robot: true, hook: {secret: ...}, events: {stages: [...]}, inbound: {token: ...}"


class RoutesError(ValueError):
    """The route file cannot be used; ``problems`` holds every problem found, one line each."""

    def __init__(self, problems: Sequence[str]) -> None:
        self.problems = list(problems)
        super().__init__("\n".join(self.problems))


def load_routes(path: str | os.PathLike[str], environ: Mapping[str, str] | None = None) -> RouteFile:
    """Read and validate the route file at ``path``; ``${NAME}`` is taken from ``environ`` (``os.environ``)."""
    file = os.fspath(path)
    try:
        text = Path(file).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
        raise RoutesError([f"{file}: cannot read the route file: {reason}"]) from None
    return parse_routes(text, file, environ)


def parse_routes(text: str, file: str = "routes.yaml", environ: Mapping[str, str] | None = None) -> RouteFile:
    """Validate route file text; ``file`` is the name problems are reported under."""
    problems = Problems(file)
    tree = parse(text, problems, os.environ if environ is None else environ)
    routes = None if tree is None else _FileParser(problems).read(tree)
    if problems.messages or routes is None:
        raise RoutesError(problems.messages)
    return routes


def _loopback(host: str) -> bool:
    try:
        return host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def webhook_problem(url: str) -> str | None:
    """Why ``url`` is not an incoming webhook URL b24bridge may use (the URL itself is never quoted)."""
    try:
        parts = urlsplit(url)
        host = parts.hostname
    except ValueError:
        return "not an URL"
    if parts.scheme not in ("https", "http") or not host:
        return "not an https URL"
    if parts.scheme == "http" and not _loopback(host):
        return "plain http is refused outside loopback"
    if not _WEBHOOK_PATH.fullmatch(parts.path) or parts.query or parts.fragment:
        return "not an incoming webhook URL"
    return None


class _FileParser(SystemsParser):
    def read(self, tree: Tree) -> RouteFile | None:
        root = self.mapping(tree, [], 1, "a mapping with portals: and routes:")
        if root is None:
            return None
        self.keys(root, [], root.line, known=("portals", "routes"), required=("portals", "routes"))
        portal_entry, route_entry = root.entries.get("portals"), root.entries.get("routes")
        portals = {} if portal_entry is None else self._portals(portal_entry)
        names = sorted(portal_entry.node.entries) if portal_entry and isinstance(portal_entry.node, Map) else []
        routes: dict[str, Route] = {}
        if route_entry is not None:
            node = self.mapping(route_entry.node, ["routes"], route_entry.key_line, "route name: route")
            for name, entry in (node.entries if node else {}).items():
                route = self._route(name, entry, portals, names)
                if route is not None:
                    routes[name] = route
            if node is not None and not node.entries:
                self.problems.add(route_entry.key_line, ["routes"], "no route", "at least one route")
        if any(route.source == INBOUND for route in routes.values()):
            portals[INBOUND] = INBOUND_REF
        return RouteFile(self.problems.file, frozen(portals), frozen(routes))

    def _portals(self, entry: Entry) -> dict[str, PortalRef]:
        node = self.mapping(entry.node, ["portals"], entry.key_line, "portal name: {app: ...} or {webhook: ...}")
        portals: dict[str, PortalRef] = {}
        for name, item in (node.entries if node else {}).items():
            path: list[Segment] = ["portals", name]
            if not NAME.fullmatch(name):
                self.problems.add(item.key_line, path, "not a portal name", NAME_ALLOWED)
            if name == INBOUND:
                self.problems.add(item.key_line, path, "a reserved name", "source: inbound names your own systems")
            spec = self.mapping(item.node, path, item.key_line, "{app: <domain or member_id>} or {webhook: <URL>}")
            if spec is None:
                continue
            if "endpoint" in spec.entries:
                portals[name] = self._endpoint(name, spec, path, item.key_line)
                continue
            self.keys(spec, path, item.key_line, known=("app", "webhook", "plan"))
            app, webhook, plan = (self.text(spec, key, path) for key in ("app", "webhook", "plan"))
            if plan is not None and plan not in PLANS:
                line = spec.entries["plan"].key_line
                self.problems.add(line, [*path, "plan"], f"unknown plan {plan!r}", ", ".join(PLANS))
            if ("app" in spec.entries) == ("webhook" in spec.entries):
                self.problems.add(
                    item.key_line, path, "needs exactly one of app, webhook and endpoint", "app:, webhook: or endpoint:"
                )
            if app is not None and not _APP_REF.fullmatch(app):
                self.problems.add(
                    spec.entries["app"].key_line,
                    [*path, "app"],
                    "not a domain or member_id",
                    "portal.bitrix24.com, or the 32-character member_id",
                )
            if webhook is not None and (problem := webhook_problem(webhook)) is not None:
                self.problems.add(spec.entries["webhook"].key_line, [*path, "webhook"], problem, WEBHOOK_ALLOWED)
            elif webhook is not None and not webhook.endswith("/"):
                webhook += "/"
            portals[name] = PortalRef(name, app, webhook, item.key_line, plan=plan or "cloud")
        return portals

    def _route(self, name: str, entry: Entry, portals: Mapping[str, PortalRef], names: list[str]) -> Route | None:
        path: list[Segment] = ["routes", name]
        if not NAME.fullmatch(name):
            self.problems.add(entry.key_line, path, "not a route name", NAME_ALLOWED)
        node = self.mapping(entry.node, path, entry.key_line, "source:, target:, triggers:, deal: ...")
        if node is None:
            return None
        kinds = {end: self._kind(node, f"{end}_entity", path) for end in ("source", "target")}
        fields_key = kinds["target"].name
        known = ("source", "target", "source_entity", "target_entity", "triggers", fields_key, "contact", "company",
                 "products", "status_back")  # fmt: skip
        self.keys(node, path, entry.key_line, known=known, required=("source", "target", "triggers", fields_key))
        ends: dict[str, str | None] = {}
        for end in ("source", "target"):
            ends[end] = self.text(node, end, path)
            if ends[end] is not None and ends[end] not in names and (end, ends[end]) != ("source", INBOUND):
                self.problems.add(
                    node.entries[end].key_line,
                    [*path, end],
                    f"unknown portal {ends[end]!r}",
                    choices(str(ends[end]), names),
                )
        source = INBOUND_REF if ends["source"] == INBOUND else portals.get(ends["source"] or "")
        products = self.flag(node, "products", path)
        if products and any(kind.is_item for kind in kinds.values()):
            what = "a smart process's product rows (crm.item.productrow.*) are not handed over yet"
            self.problems.add(node.entries["products"].key_line, [*path, "products"], what, "products: false")
        parts = node.entries
        self._system_ends(node, path, source, portals.get(ends["target"] or ""))
        rules = parts.get(fields_key)
        lines = {key: item.key_line for key, item in parts.items()}
        if rules is not None:
            lines["deal"] = rules.key_line
        route = Route(
            name=name,
            source=ends["source"] or "",
            target=ends["target"] or "",
            triggers=self._triggers(parts.get("triggers"), [*path, "triggers"], source),
            deal=self.rules(rules, [*path, fields_key], "deal") if rules is not None else frozen({}),
            contact=self._entity(parts.get("contact"), [*path, "contact"], "contact"),
            company=self._entity(parts.get("company"), [*path, "company"], "company"),
            products=products,
            status_back=self._status_back(parts.get("status_back"), [*path, "status_back"]),
            line=entry.key_line,
            file=self.problems.file,
            lines=frozen(lines),
            source_entity=kinds["source"],
            target_entity=kinds["target"],
        )
        self._system_rules(route, path, source, portals.get(route.target))
        return route

    def _kind(self, node: Map, key: str, path: list[Segment]) -> RecordKind:
        """``source_entity: lead`` (deal when not given), or ``{smart_process: 128}`` / ``{smart_process: Orders}``."""
        entry = node.entries.get(key)
        if entry is None:
            return DEAL
        if isinstance(entry.node, Map):
            return self._process(entry.node, [*path, key], entry.key_line)
        value = entry.node.value if isinstance(entry.node, Scalar) else None
        kind = KINDS.get(value) if isinstance(value, str) else None
        if kind is None:
            allowed = choices(str(value), [*KINDS, "{smart_process: entityTypeId or title}"])
            self.problems.add(entry.key_line, [*path, key], "not a CRM entity", allowed)
            return DEAL
        return kind

    def _process(self, node: Map, path: list[Segment], line: int) -> RecordKind:
        self.keys(node, path, line, known=("smart_process",), required=("smart_process",))
        entry = node.entries.get("smart_process")
        value = entry.node.value if entry is not None and isinstance(entry.node, Scalar) else None
        if isinstance(value, int) and not isinstance(value, bool) and FIRST_PROCESS_TYPE_ID <= value < 10**9:
            return smart_process(value)
        if isinstance(value, str) and value.strip() and len(value) <= 255:
            return smart_process(title=value.strip())
        if entry is not None:
            allowed = f"an entityTypeId ({FIRST_PROCESS_TYPE_ID} or more) or the process's title"
            self.problems.add(entry.key_line, [*path, "smart_process"], "not a smart process", allowed)
        return smart_process(FIRST_PROCESS_TYPE_ID)

    def _triggers(self, entry: Entry | None, path: list[Segment], source: PortalRef | None) -> Triggers:
        empty = Triggers(False, None, (), 0)
        node = None if entry is None else self.mapping(entry.node, path, entry.key_line, TRIGGER_ALLOWED)
        if entry is None or node is None:
            return empty
        self.keys(node, path, entry.key_line, known=("robot", "hook", "events", "inbound"))
        token = self._inbound_token(node, path, source)
        robot = self.flag(node, "robot", path)
        secret, stages = None, list[str]()
        lines = {key: item.key_line for key, item in node.entries.items()}
        if (hook := node.entries.get("hook")) is not None:
            secret = self._secret(hook, [*path, "hook"])
        if (events := node.entries.get("events")) is not None:
            stages, stage_lines = self._event_stages(events, [*path, "events"])
            lines.update(stage_lines)
        if not (robot or hook or events or "inbound" in node.entries):
            self.problems.add(entry.key_line, path, "no trigger", TRIGGER_ALLOWED)
        if source is not None and source.app is None and not source.inbound:
            for key in ("robot", "events"):
                if key in node.entries and (key != "robot" or robot):
                    self.problems.add(
                        node.entries[key].key_line,
                        [*path, key],
                        f"needs b24bridge installed in portal {source.name!r} (it is a webhook)",
                        "hook: for a webhook-only source, or app: for the portal",
                    )
        return Triggers(robot, secret, tuple(stages), entry.key_line, frozen(lines), inbound_token=token)

    def _secret(self, entry: Entry, path: list[Segment]) -> str | None:
        node = self.mapping(entry.node, path, entry.key_line, "{secret: <at least 16 characters>}")
        if node is None:
            return None
        self.keys(node, path, entry.key_line, known=("secret",), required=("secret",))
        secret = self.text(node, "secret", path)
        if secret is not None and (len(secret) < MIN_SECRET or not _SECRET.fullmatch(secret)):
            self.problems.add(
                node.entries["secret"].key_line,
                [*path, "secret"],
                "too short or not URL-safe",
                f"at least {MIN_SECRET} of A-Z a-z 0-9 . _ ~ -",
            )
        return secret

    def _event_stages(self, entry: Entry, path: list[Segment]) -> tuple[list[str], dict[str, int]]:
        node = self.mapping(entry.node, path, entry.key_line, "{stages: [source stage, ...]}")
        if node is None:
            return [], {}
        self.keys(node, path, entry.key_line, known=("stages",), required=("stages",))
        stages_entry = node.entries.get("stages")
        if stages_entry is None:
            return [], {}
        items = stages_entry.node
        if not isinstance(items, Seq) or not items.items:
            self.problems.add(stages_entry.key_line, [*path, "stages"], "not a list of stages", '["C1:PREPARATION"]')
            return [], {}
        stages, lines = [], {"events.stages": stages_entry.key_line}
        for index, item in enumerate(items.items):
            if not isinstance(item, Scalar) or not isinstance(item.value, str) or not item.value:
                self.problems.add(item.line, [*path, "stages", index], "not a stage id", "text such as C1:NEW")
                continue
            stages.append(item.value)
            lines[f"events.stages.{index}"] = item.line
        return stages, lines

    def _entity(self, entry: Entry | None, path: list[Segment], scope: Scope) -> EntityRule | None:
        if entry is None:
            return None
        node = self.mapping(entry.node, path, entry.key_line, "{match: [...], fields: {...}}")
        if node is None:
            return None
        self.keys(node, path, entry.key_line, known=("match", "fields"), required=("fields",))
        fields = self.rules(node.entries["fields"], [*path, "fields"], scope) if "fields" in node.entries else {}
        keys = list(MATCH_KEYS[scope])
        match_entry = node.entries.get("match")
        if match_entry is None:  # the default: every key, in the documented order
            return EntityRule(fields, tuple(keys), entry.key_line)
        match: list[str] = []
        items = match_entry.node.items if isinstance(match_entry.node, Seq) else [match_entry.node]
        for index, item in enumerate(items):
            key = self._match_key(item, [*path, "match", index], keys)
            if key is None:
                continue
            if key in match:
                self.problems.add(item.line, [*path, "match", index], f"{key} twice", "each key once")
            else:
                match.append(key)
        return EntityRule(fields, tuple(match), entry.key_line, frozen({"match": match_entry.key_line}))

    def _match_key(self, item: Tree, path: list[Segment], keys: list[str]) -> str | None:
        """``phone``, ``email``, ``tax_number`` or ``{field: UF_CRM_INN}`` (``target:`` when the target names the
        field otherwise): the key, or ``None`` with the problem reported."""
        if isinstance(item, Scalar):
            if isinstance(item.value, str) and item.value in keys:
                return item.value
            self.problems.add(item.line, path, "not a match key", choices(str(item.value), keys) + ", or {field: NAME}")
            return None
        node = self.mapping(item, path, item.line, "{field: NAME}")
        if node is None:
            return None
        self.keys(node, path, item.line, known=("field", "target"), required=("field",))
        if "field" not in node.entries:
            return None
        names: list[str] = []
        for part in ("field", "target"):
            entry = node.entries.get(part)
            if entry is None:
                continue
            value = entry.node.value if isinstance(entry.node, Scalar) else None
            if not isinstance(value, str) or not FIELD_NAME.fullmatch(value):
                self.problems.add(entry.key_line, [*path, part], "not a field name", "a name such as UF_CRM_INN")
                return None
            names.append(value)
        return field_key(names[0], names[1] if len(names) > 1 else None)

    def _status_back(self, entry: Entry | None, path: list[Segment]) -> StatusBack | None:
        if entry is None:
            return None
        node = self.mapping(entry.node, path, entry.key_line, "{stages: {...}, fields: {...}}")
        if node is None:
            return None
        self.keys(node, path, entry.key_line, known=("stages", "fields"))
        stages: dict[str, str] = {}
        lines: dict[str, int] = {}
        if (stages_entry := node.entries.get("stages")) is not None:
            stage_map = self.mapping(
                stages_entry.node, [*path, "stages"], stages_entry.key_line, "{target stage: source stage}"
            )
            for key, item in (stage_map.entries if stage_map else {}).items():
                value = item.node.value if isinstance(item.node, Scalar) else None
                if not isinstance(value, str) or not value:
                    self.problems.add(item.key_line, [*path, "stages", key], "not a stage id", "a source stage")
                    continue
                stages[key], lines[f"stages.{key}"] = value, item.key_line
        fields_entry = node.entries.get("fields")
        fields = {} if fields_entry is None else self.rules(fields_entry, [*path, "fields"], "status_back")
        if not stages and not fields:
            self.problems.add(entry.key_line, path, "nothing to write back", "stages: and/or fields:")
        return StatusBack(frozen(stages), fields, entry.key_line, frozen(lines))
