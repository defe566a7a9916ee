"""The route file's parts about your own systems: an HTTPS endpoint as a target (``portals: erp: {endpoint: ...}``)
and ``source: inbound`` (your system POSTs records to ``/api/inbound/{route}``), and what each cannot have.

A mixin of the file parser (:mod:`.routes`): the same problems, lines and paths.
"""

from __future__ import annotations

from .receivers import endpoint_problem, secret_problem
from .route_model import INBOUND, PortalRef, Route
from .routes_yaml import Map, Scalar, Segment, Seq
from .rules_parse import RuleParser

ENDPOINT_ALLOWED = "https://<your system>/<path> (http only to networks B24BRIDGE_ENDPOINT_ALLOW_NETWORKS lists)"
# The inbound source: one name for every route your systems POST to (each route has its own token).
INBOUND_REF = PortalRef(INBOUND, None, None, 0, inbound=True)
MIN_TOKEN = 32


class SystemsParser(RuleParser):
    def _endpoint(self, name: str, spec: Map, path: list[Segment], line: int) -> PortalRef:
        """``{endpoint: https://..., secret: whsec_...}`` (or ``secrets: [new, old]`` while one is rotated)."""
        self.keys(spec, path, line, known=("endpoint", "secret", "secrets"), required=("endpoint",))
        url = self.text(spec, "endpoint", path)
        if url is not None and (problem := endpoint_problem(url)) is not None:
            self.problems.add(spec.entries["endpoint"].key_line, [*path, "endpoint"], problem, ENDPOINT_ALLOWED)
        secrets: list[str] = []
        if ("secret" in spec.entries) == ("secrets" in spec.entries):
            self.problems.add(line, path, "needs exactly one of secret and secrets", "secret: whsec_...")
        elif (single := self.text(spec, "secret", path)) is not None:
            secrets = [single]
        elif "secrets" in spec.entries:
            entry = spec.entries["secrets"]
            items = entry.node.items if isinstance(entry.node, Seq) else []
            secrets = [i.value for i in items if isinstance(i, Scalar) and isinstance(i.value, str)]
            if not 1 <= len(secrets) <= 2 or len(secrets) != len(items):
                self.problems.add(entry.key_line, [*path, "secrets"], "not one or two secrets", "[new, old]")
        for secret in secrets:
            if (problem := secret_problem(secret)) is not None:
                self.problems.add(line, [*path, "secret"], problem, "whsec_ and 24 to 64 bytes in base64")
        return PortalRef(name, None, None, line, endpoint=url or "", secrets=tuple(secrets))

    def _inbound_token(self, node: Map, path: list[Segment], source: PortalRef | None) -> str | None:
        """``triggers: {inbound: {token: ...}}``: the bearer token of ``POST /api/inbound/{route}``."""
        entry = node.entries.get("inbound")
        if entry is None:
            if source is not None and source.inbound:
                self.problems.add(node.line, path, "an inbound route needs its token", "inbound: {token: ...}")
            return None
        spec = self.mapping(entry.node, [*path, "inbound"], entry.key_line, "{token: <at least 32 characters>}")
        if spec is None:
            return None
        self.keys(spec, [*path, "inbound"], entry.key_line, known=("token",), required=("token",))
        token = self.text(spec, "token", [*path, "inbound"])
        if token is not None and (len(token) < MIN_TOKEN or not token.isascii() or not token.isprintable()):
            line = spec.entries["token"].key_line
            self.problems.add(line, [*path, "inbound", "token"], "too short", f"at least {MIN_TOKEN} characters")
        if source is not None and not source.inbound:
            hint = "source: inbound"
            self.problems.add(entry.key_line, [*path, "inbound"], "only a route from your own systems", hint)
        for key in ("robot", "hook", "events"):
            if key in node.entries:
                hint = "inbound: only"
                self.problems.add(node.entries[key].key_line, [*path, key], "an inbound route has no portal", hint)
        return token

    def _system_ends(self, node: Map, path: list[Segment], source: PortalRef | None, target: PortalRef | None) -> None:
        """An endpoint receives: it is no source, and what only a portal target has (its stages coming back, its
        contacts to match) is refused on a route to one. An inbound route has no source portal to write back to."""
        if source is not None and source.endpoint is not None:
            hint = "a portal (app: or webhook:) as the source"
            self.problems.add(node.entries["source"].key_line, [*path, "source"], "an endpoint is no source", hint)
        if target is not None and target.inbound:
            self.problems.add(node.entries["target"].key_line, [*path, "target"], "inbound is a source", "a portal")
        back = node.entries.get("status_back")
        if back is not None and source is not None and source.inbound:
            self.problems.add(back.key_line, [*path, "status_back"], "an inbound route has no source to write back to",
                              "your system reads the answer of its POST")  # fmt: skip
        if target is None or target.endpoint is None:
            return
        if source is not None and source.inbound:
            hint = "a portal as the target"
            self.problems.add(node.entries["target"].key_line, [*path, "target"], "inbound to an endpoint", hint)
        if back is not None and isinstance(back.node, Map) and "stages" in back.node.entries:
            line = back.node.entries["stages"].key_line
            self.problems.add(line, [*path, "status_back", "stages"], "an endpoint has no stages", "fields: only")
        for scope in ("contact", "company"):
            part = node.entries.get(scope)
            if part is not None and isinstance(part.node, Map) and "match" in part.node.entries:
                line = part.node.entries["match"].key_line
                self.problems.add(line, [*path, scope, "match"], "an endpoint matches its own records", "fields: only")

    def _system_rules(
        self, route: Route, path: list[Segment], source: PortalRef | None, target: PortalRef | None
    ) -> None:
        """``user`` rules match a source user to a target user by e-mail: both ends must be portals."""
        if (source is None or source.is_portal) and (target is None or target.is_portal):
            return
        parties = (("contact", route.contact), ("company", route.company))
        scopes = [([route.target_entity.name], route.deal)] + [([n, "fields"], e.fields) for n, e in parties if e]
        for where, scoped in scopes:
            for field_name, rule in scoped.items():
                if rule.kind == "user":
                    hint = "copy the user id, or from: ...EMAIL"
                    problem = "users are matched between two portals only"
                    self.problems.add(rule.line, [*path, *where, field_name], problem, hint)
