"""Your own systems as a source: ``POST /api/inbound/{route}`` creates or updates a record in the route's target
portal through the route's mapping, exactly once per ``Idempotency-Key``.

The body is ``{"record": {...}, "id": ..., "contact": {...}, "company": {...}, "products": [...]}``: ``record``
(required) is what the route's rules read (``{{ record.title }}``, ``{from: title}``); ``id``, your system's id of the
record, makes a later POST of the same id update the record it created (without one, each key creates a record);
``contact``, ``company`` and ``products`` feed the route's contact, company and product rules.

A key is stored with its run in the same statement (the run's intake key: unique, so two POSTs of one key, at once
or a day apart, or one from the local spool while the database was away, are one run). The same key with another
body is refused (422), as the IETF Idempotency-Key draft says. The answer waits a few seconds for the delivery:
200 with the target record's id, or 202 with the run's id and a ``Location`` to ask again (``GET
/api/inbound/{route}/runs/{run_id}``) while it waits for the portal's limits.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson

from b24bridge.intake.schemas import Submission
from b24bridge.runs import metrics
from b24bridge.runs.schemas import NewRun, Run
from b24bridge.runs.service import RunLog
from b24bridge.safetext import refusal

from . import tasks
from .inbound_record import source_id
from .intake import BridgeIntake, deal_lock
from .route_model import INBOUND, RouteFile

# How long a POST waits for its delivery before it is answered 202 (a portal's limits may hold it for longer).
ANSWER_WAIT = 5.0
MAX_KEY = 255
MAX_ID = 200


@dataclass(frozen=True)
class InboundAnswer:
    status: int
    body: dict[str, Any]
    headers: dict[str, str] = field(default_factory=dict)


def _refused(status: int, error: str, **headers: str) -> InboundAnswer:
    return InboundAnswer(status, {"error": error}, headers)


def _body_problem(body: Any) -> str | None:
    if not isinstance(body, dict):
        return "the body must be a JSON object"
    if not isinstance(body.get("record"), dict):
        return "record: must be an object of the record's fields"
    for name in ("contact", "company"):
        if body.get(name) is not None and not isinstance(body[name], dict):
            return f"{name}: must be an object or null"
    products = body.get("products")
    if products is not None and not (isinstance(products, list) and all(isinstance(p, dict) for p in products)):
        return "products: must be a list of objects"
    given = body.get("id")
    if given is not None and (isinstance(given, bool) or not isinstance(given, str | int) or len(str(given)) > MAX_ID):
        return f"id: must be text or a number of at most {MAX_ID} characters"
    unknown = sorted(set(body) - {"record", "id", "contact", "company", "products"})
    return f"unknown field {unknown[0]!r}: record, id, contact, company, products" if unknown else None


def _unstorable(value: Any, where: str = "body") -> str | None:
    """Where the body holds text the database cannot (a NUL, a lone surrogate), or None."""
    if isinstance(value, str):
        reason = refusal(value)
        return None if reason is None else f"{where} {reason}"
    if isinstance(value, dict):
        for name, item in value.items():
            found = _unstorable(str(name), f"a field name in {where}") or _unstorable(item, f"{where}.{name}")
            if found is not None:
                return found
    if isinstance(value, list):
        return next((f for n, item in enumerate(value) if (f := _unstorable(item, f"{where}[{n}]"))), None)
    return None


class InboundService:
    def __init__(self, routes: RouteFile, intake: BridgeIntake, runs: RunLog) -> None:
        self.routes = routes
        self.intake = intake
        self.runs = runs

    def _authorised(self, route_name: str, token: str) -> InboundAnswer | None:
        """None when ``token`` is the route's; the refusal otherwise (compared in constant time, unknown routes too)."""
        route = self.routes.routes.get(route_name)
        expected = route.triggers.inbound_token if route is not None and route.source == INBOUND else None
        matched = hmac.compare_digest((expected or "\0" * 32).encode(), token.encode())
        if expected is None:
            return _refused(404, f"no inbound route {route_name!r}")
        if not matched:
            return _refused(401, "a wrong bearer token", **{"WWW-Authenticate": 'Bearer realm="b24bridge"'})
        return None

    async def submit(
        self, route_name: str, token: str, key: str | None, body: Any, correlation_id: str | None = None
    ) -> InboundAnswer:
        refused = self._authorised(route_name, token)
        if refused is not None:
            metrics.inbound("inbound", None, "unknown" if refused.status == 404 else route_name, "refused")
            return refused
        if key is None or not key.strip():
            return _refused(400, "the Idempotency-Key header is required")
        if len(key) > MAX_KEY or not key.isascii() or not key.isprintable():
            return _refused(400, f"the Idempotency-Key header must be at most {MAX_KEY} printable ASCII characters")
        if (problem := _body_problem(body)) is not None or (problem := _unstorable(body)) is not None:
            return _refused(400, problem)
        route = self.routes.routes[route_name]
        given = None if body.get("id") is None else str(body["id"])
        record_id = source_id(route_name, given, key)
        fingerprint = hashlib.sha256(orjson.dumps(body, option=orjson.OPT_SORT_KEYS)).hexdigest()
        run = NewRun(
            member_id=INBOUND,
            kind="bridge",
            route=route_name,
            trigger="inbound",
            document_id=route.source_entity.document_id(record_id),
            inputs={
                "deal_id": record_id,
                "inbound": body,
                "fingerprint": fingerprint,
                "correlation_id": correlation_id,
            },
        )
        intake_key = f"inbound:{route_name}:{hashlib.sha256(key.encode()).hexdigest()[:40]}"
        lock = deal_lock(INBOUND, record_id, route.source_entity)
        stored = await self.intake.store(Submission(run, tasks.RUN_TASK, INBOUND, lock=lock, intake_key=intake_key))
        if stored is None:
            metrics.inbound("inbound", INBOUND, route_name, "unavailable")
            return _refused(503, "the database and the local spool are unavailable; nothing was stored")
        metrics.inbound("inbound", INBOUND, route_name, stored.outcome)
        if stored.outcome == "spooled":
            return InboundAnswer(202, {"status": "accepted", "spooled": True})
        if stored.run_id is not None:
            return await self._answer(route_name, stored.run_id, wait=ANSWER_WAIT)
        first = await self.runs.by_intake_key(intake_key)
        if first is None:  # stored from the spool meanwhile, and not yet in the log: the answer comes with the next ask
            return InboundAnswer(202, {"status": "accepted"})
        if first.inputs.get("fingerprint") != fingerprint:
            return _refused(422, "this Idempotency-Key was used with another body")
        return await self._answer(route_name, first.id, wait=ANSWER_WAIT)

    async def status(self, route_name: str, token: str, run_id: int) -> InboundAnswer:
        refused = self._authorised(route_name, token)
        if refused is not None:
            return refused
        return await self._answer(route_name, run_id, wait=0.0)

    async def _answer(self, route_name: str, run_id: int, *, wait: float) -> InboundAnswer:
        run = await self._settled(run_id, wait)
        if run is None or run.route != route_name or run.trigger != "inbound":
            return _refused(404, f"no run {run_id} of inbound route {route_name!r}")
        outcome: Mapping[str, Any] = run.outcome or {}
        if run.status == "succeeded":
            values = outcome.get("values") or {}
            found = {"id": values.get("target_deal_id") or None, "url": values.get("target_deal_url") or None}
            return InboundAnswer(
                200, {"run_id": run.id, "status": "succeeded", "action": outcome.get("action"), **found}
            )
        if run.status == "dead":
            return InboundAnswer(422, {"run_id": run.id, "status": "dead", "error": run.error})
        location = f"/api/inbound/{route_name}/runs/{run.id}"
        return InboundAnswer(202, {"run_id": run.id, "status": run.status}, {"Location": location})

    async def _settled(self, run_id: int, wait: float) -> Run | None:
        """The run once it has succeeded or died, or as it is after ``wait`` seconds."""
        loop = asyncio.get_running_loop()
        deadline, pause = loop.time() + wait, 0.01
        while True:
            run = await self.runs.get(run_id)
            if run is None or run.status in ("succeeded", "dead") or loop.time() >= deadline:
                return run
            await asyncio.sleep(min(pause, max(0.0, deadline - loop.time())))
            pause = min(pause * 2, 0.2)
