"""The bridge's door: a trigger (the bridge robot, the source's outbound-webhook rule, a CRM event, the target's
status coming back) becomes a run and its job in one transaction, or is refused with nothing stored.

Triggers that carry no workflow to answer (hooks, events, status) coalesce: while one run of a deal waits in the
queue, another adds nothing (the waiting one reads the deal as it is when it runs). The content itself is
deduplicated when the run has read and mapped the deal (:mod:`.dedupe`).
"""

from __future__ import annotations

import hmac
from collections.abc import Mapping
from typing import Any

from b24bridge.bitrix import BitrixError
from b24bridge.intake.schemas import Stored, Submission
from b24bridge.intake.service import Intake, IntakeUnavailable
from b24bridge.observability import get_logger
from b24bridge.portals.crypto import Keyring
from b24bridge.portals.schemas import Check, EventRefused
from b24bridge.portals.service import PortalRegistry
from b24bridge.runs import metrics
from b24bridge.runs.schemas import NewRun

from . import tasks
from .connections import Connections
from .entities import DEAL, ITEM_EVENTS, RecordKind, id_of, kind_of_event, record_id_of
from .route_model import Route, RouteFile
from .schemas import Accepted

log = get_logger(__name__)

UNAVAILABLE = Accepted(503, "the database and the local spool are unavailable; nothing was stored")
STATUS_PURPOSE = "bridge_status"


def _not_an_id(kind: RecordKind) -> str:
    return f"deal must be a {kind.label} id (or {kind.entity}_<id>)"


def status_secret(keys: Keyring, route: str) -> str:
    """The secret of a route's status-back hook: derived from the encryption key, printed by ``routes check``."""
    return keys.mac(STATUS_PURPOSE, route).partition(":")[2][:32]


class BridgeIntake:
    def __init__(
        self,
        routes: RouteFile,
        registry: PortalRegistry,
        connections: Connections,
        intake: Intake,
        keys: Keyring,
        public_url: str | None,
    ) -> None:
        self.routes = routes
        self.registry = registry
        self.connections = connections
        self.intake = intake
        self.keys = keys
        self.public_url = public_url

    # --- triggers -----------------------------------------------------------------------------------------------

    async def from_hook(
        self, route_name: str, secret: str, deal: Any, fields: Mapping[str, str], correlation_id: str | None = None
    ) -> Accepted:
        """The source's outbound-webhook automation rule: ``/bridge/hooks/{route}?secret=...&deal=ID``."""
        route = self.routes.routes.get(route_name)
        expected = route.triggers.hook_secret if route is not None else None
        # Compared in constant time, and compared even for an unknown route, so timing says nothing either way.
        matched = hmac.compare_digest((expected or "\0" * 32).encode(), secret.encode())
        if route is None or expected is None or not matched:
            metrics.inbound("hook", None, route_name if route else "unknown", "refused")
            return Accepted(404 if route is None or expected is None else 403, "unknown route or wrong secret")
        deal_id = id_of(route.source_entity, deal)
        if deal_id is None:
            return Accepted(400, _not_an_id(route.source_entity))
        source_key = await self.connections.key(self.routes.portals[route.source])
        if source_key is None:
            return Accepted(409, f"route {route_name}: its source portal has not installed b24bridge")
        kind = concrete(route.source_entity, deal)
        return await self._accept(route, source_key, deal_id, "hook", fields, correlation_id, kind=kind)

    async def from_status_hook(
        self, route_name: str, secret: str, deal: Any, correlation_id: str | None = None
    ) -> Accepted:
        """The target's outbound-webhook rule on the stages that go back: ``/bridge/hooks/{route}/status``."""
        route = self.routes.routes.get(route_name)
        expected = status_secret(self.keys, route_name)
        matched = hmac.compare_digest(expected.encode(), secret.encode())
        if route is None or route.status_back is None or not matched:
            metrics.inbound("status", None, route_name if route else "unknown", "refused")
            return Accepted(404 if route is None or route.status_back is None else 403, "unknown route or wrong secret")
        deal_id = id_of(route.target_entity, deal)
        if deal_id is None:
            return Accepted(400, _not_an_id(route.target_entity))
        target_key = await self.connections.key(self.routes.portals[route.target])
        if target_key is None:
            return Accepted(409, f"route {route_name}: its target portal has not installed b24bridge")
        kind = concrete(route.target_entity, deal)
        return await self._accept(route, target_key, deal_id, "status", {}, correlation_id, kind=kind)

    async def from_event(
        self,
        member_id: str,
        event: str,
        deal: Any,
        correlation_id: str | None = None,
        check: Check | None = None,
        entity_type_id: Any = None,
    ) -> list[Accepted]:
        """ONCRMDEALADD/UPDATE (or a lead's, or a smart-process item's with its ``entity_type_id``) of a portal: a
        delivery for each route that listens to its events (as a source of that entity), and a status run for each
        route that sends status back from it (as a target)."""
        kind = kind_of_event(event, entity_type_id) or (None if event.upper() in ITEM_EVENTS else DEAL)
        if kind is None:
            return [Accepted(400, "data[FIELDS][ENTITY_TYPE_ID] must be a smart process's entityTypeId (128 or more)")]
        deal_id = id_of(kind, deal)
        if deal_id is None:
            return [Accepted(400, f"data[FIELDS][ID] must be a {kind.label} id")]
        accepted = []
        for route in self.routes.routes.values():
            source_key = await self.connections.key(self.routes.portals[route.source])
            target_key = await self.connections.key(self.routes.portals[route.target])
            if route.triggers.event_stages and source_key == member_id and route.source_entity.takes(kind):
                fields = {"event": event}
                accepted.append(
                    await self._accept(route, member_id, deal_id, "event", fields, correlation_id, check, kind)
                )
            back = route.status_back is not None and route.target_entity.takes(kind) and event == kind.events[1]
            if back and target_key == member_id:
                accepted.append(
                    await self._accept(route, member_id, deal_id, "status", {}, correlation_id, check, kind)
                )
        return accepted

    async def on_deal_event(
        self,
        member_id: str,
        event: str,
        form: Mapping[str, Any],
        correlation_id: str | None = None,
        check: Check | None = None,
    ) -> dict[str, Any]:
        """The portal event handler for ONCRMDEALADD/UPDATE, ONCRMLEADADD/UPDATE and ONCRMDYNAMICITEMADD/UPDATE (its
        application token checked, or to be: ``check``)."""
        fields = form.get("data", {}).get("FIELDS", {}) if isinstance(form.get("data"), dict) else {}
        deal = fields.get("ID") if isinstance(fields, dict) else None
        entity_type_id = fields.get("ENTITY_TYPE_ID") if isinstance(fields, dict) else None
        answers = await self.from_event(member_id, event, deal, correlation_id, check, entity_type_id)
        if any(answer.http_status == 503 for answer in answers):
            raise EventRefused(UNAVAILABLE.http_status, UNAVAILABLE.detail)
        runs = [answer.run_id for answer in answers if answer.run_id is not None]
        spooled = sum(answer.spooled for answer in answers)
        if not runs and not spooled:
            return {"status": "ignored", "event": event}  # no route listens to this portal's deals
        return {"status": "accepted", "event": event, "runs": runs, **({"spooled": spooled} if spooled else {})}

    async def bind_events(self, member_id: str) -> None:
        """Install hook: bind the deal events a newly installed portal must send (bindings vanish on every update).

        As a source, for routes with an events trigger; as a target, for routes that send status back."""
        events: set[str] = set()
        for route in self.routes.routes.values():
            if route.triggers.event_stages and await self._is(route.source, member_id):
                events |= set(route.source_entity.events)
            if route.status_back is not None and await self._is(route.target, member_id):
                events.add(route.target_entity.events[1])
        if not events:
            return
        if not self.public_url:
            log.warning("B24BRIDGE_PUBLIC_URL is not set: deal events cannot be bound", member_id=member_id)
            return
        portal = await self.registry.connect(member_id)
        handler = f"{self.public_url.rstrip('/')}/events"
        for event in sorted(events):
            try:
                await portal.call("event.bind", {"event": event, "handler": handler})
            except BitrixError as exc:
                if "already" not in str(exc).lower():  # a binding that exists is what we wanted
                    raise

    async def _is(self, portal_name: str, member_id: str) -> bool:
        ref = self.routes.portals[portal_name]
        return ref.app is not None and await self.connections.key(ref) == member_id

    async def from_robot(
        self,
        member_id: str,
        form: Mapping[str, Any],
        auth: Mapping[str, Any],
        correlation_id: str | None = None,
        check: Check | None = None,
    ) -> Accepted:
        """The bridge robot ran in a source's workflow (its application token checked by the caller, or to be checked
        when drained: ``check``)."""
        workflow_id, event_token = form.get("workflow_id"), form.get("event_token")
        properties = form.get("properties") if isinstance(form.get("properties"), dict) else {}
        assert isinstance(properties, dict)
        route_name = str(properties.get("route") or "").strip()
        route = self.routes.routes.get(route_name)
        kind = concrete(route.source_entity if route is not None else DEAL, form.get("document_id"))
        deal_id = id_of(kind, form.get("document_id"))
        error = None
        if route is None:
            error = f"no route {route_name!r}: routes are {', '.join(sorted(self.routes.routes)) or 'none'}"
        elif not route.triggers.robot:
            error = f"route {route_name} does not take the bridge robot as a trigger"
        elif await self.connections.key(self.routes.portals[route.source]) != member_id:
            error = f"route {route_name} does not start in this portal"
        elif deal_id is None:
            error = f"route {route_name} hands over {kind.label}s: the robot must run on a {kind.label}"
        run = NewRun(
            member_id=member_id,
            kind="bridge",
            robot_code="b24bridge_bridge_deal",
            route=route_name or None,
            trigger="robot",
            workflow_id=str(workflow_id),
            event_token=str(event_token),
            document_id=kind.document_id(deal_id) if deal_id else [],
            inputs={
                "deal_id": deal_id,
                "properties": properties,
                "use_subscription": form.get("use_subscription", "Y"),
                "timeout_duration": form.get("timeout_duration"),
                "auth": {key: auth[key] for key in ("member_id", "domain", "user_id") if key in auth},
                "correlation_id": correlation_id,
            },
            # A refused call still gets a job: the workflow is answered with the error, then the run is dead.
            status="failed" if error else "queued",
            error=error,
        )
        # A label names only a route of the file: a made-up name must not add a metric series.
        label = route_name if route is not None else "unknown"
        lock = deal_lock(member_id, deal_id or 0, kind)
        stored = await self.store(tasks.submission(run, lock=lock, check=check))
        if stored is None:
            metrics.inbound("robot", member_id, label, "unavailable")
            return UNAVAILABLE
        if stored.outcome == "duplicate":
            metrics.inbound("robot", member_id, label, "duplicate")
            return Accepted(200, "duplicate call, already accepted")
        metrics.inbound("robot", member_id, label, "invalid" if error else stored.outcome)
        return Accepted(200, "accepted", stored.run_id, spooled=stored.outcome == "spooled")

    async def store(self, submission: Submission) -> Stored | None:
        """What the intake made of ``submission``; None when neither the database nor the spool could keep it."""
        try:
            return await self.intake.accept(submission)
        except IntakeUnavailable:
            return None

    # --- accepting ---------------------------------------------------------------------------------------------

    async def _accept(
        self,
        route: Route,
        portal_key: str,
        deal_id: int,
        trigger: str,
        fields: Mapping[str, Any],
        correlation_id: str | None,
        check: Check | None = None,
        kind: RecordKind | None = None,
    ) -> Accepted:
        """``kind``: the record's own (an event's smart process, where the route names its process by title)."""
        kind = kind or (route.target_entity if trigger == "status" else route.source_entity)
        run = NewRun(
            member_id=portal_key,
            kind="bridge",
            route=route.name,
            trigger=trigger,
            document_id=kind.document_id(deal_id),
            inputs={"deal_id": deal_id, "fields": dict(fields), "correlation_id": correlation_id},
        )
        direction = "status" if trigger == "status" else "deliver"
        submission = tasks.submission(
            run,
            lock=deal_lock(portal_key, deal_id, kind),
            queueing_lock=f"bridge:{direction}:{route.name}:{portal_key}:{deal_lock_id(deal_id, kind)}",
            check=check,
        )
        stored = await self.store(submission)
        if stored is None:
            metrics.inbound(trigger, portal_key, route.name, "unavailable")
            return UNAVAILABLE
        metrics.inbound(trigger, portal_key, route.name, stored.outcome)
        if stored.outcome == "coalesced":
            return Accepted(200, f"a delivery of this {kind.label} is already waiting; it will read the latest state")
        return Accepted(200, "accepted", stored.run_id, spooled=stored.outcome == "spooled")


def deal_lock(portal_key: str, deal_id: int, kind: RecordKind = DEAL) -> str:
    """One record's runs run one at a time, in order (procrastinate runs jobs sharing a lock serially)."""
    return f"{kind.name}:{portal_key}:{deal_id}"


def run_lock(portal_key: str, document_id: Any, deal_id: int) -> str:
    """The lock of a stored bridge run (a replay): its record's kind from the run's document id."""
    found = record_id_of(document_id)
    return deal_lock(portal_key, deal_id, found[0] if found is not None else DEAL)


def deal_lock_id(deal_id: int, kind: RecordKind) -> str:
    """A record's part of a queueing lock: ``42`` for a deal (as before leads existed), ``lead-42``,
    ``dynamic_128-42`` otherwise."""
    return str(deal_id) if kind == DEAL else f"{kind.entity.lower()}-{deal_id}"


def concrete(kind: RecordKind, document_id: Any) -> RecordKind:
    """The record's own kind when its document id names one ``kind`` takes (a process named by title), else ``kind``."""
    found = record_id_of(document_id, kind)
    return found[0] if found is not None and kind.takes(found[0]) else kind
