"""Running a bridge run: a delivery from source to target (or a status going back), its retries, and the answer to
the workflow when the bridge robot started it.

Temporary failures (a portal unreachable, limits, an uncertain write) go back to the queue on the run's retry
schedule; an uncertain write is resolved by the next attempt, which looks the record up (ORIGIN_ID) before writing.
Permanent ones (a mapping that cannot be applied, a value the target refuses, access denied, a route that does not
exist) end the run as ``dead`` at once, with the reason; ``b24bridge runs replay`` takes it back once fixed. A dead
run never blocks other deals (each deal's runs are serial, different deals are not).
"""

from __future__ import annotations

import random
from typing import Any

import psycopg
import structlog

from b24bridge.bitrix import BitrixError
from b24bridge.observability import get_logger
from b24bridge.runs.retry import RetryRun, next_pause
from b24bridge.runs.schemas import RetrySchedule, Run
from b24bridge.runs.service import RunLog

from .connections import Connections
from .delivery import Deliverer
from .entities import record_id_of
from .inbound_record import inbound_record
from .kinds import ProcessTypes
from .mapping import MappingError
from .receivers import Receiver, ReceiverError
from .route_model import Route, RouteFile
from .schemas import BridgeConfigError, Busy, DeliveryResult
from .sources import PortalSource, PostedSource
from .status import StatusBackRunner

log = get_logger(__name__)


class BridgeRunner:
    def __init__(
        self,
        routes: RouteFile,
        connections: Connections,
        deliverer: Deliverer,
        status: StatusBackRunner,
        runs: RunLog,
        schedule: RetrySchedule,
        kinds: ProcessTypes,
        rng: random.Random | None = None,
    ) -> None:
        self.routes = routes
        self.connections = connections
        self.deliverer = deliverer
        self.status = status
        self.runs = runs
        self.schedule = schedule
        self.kinds = kinds
        self.rng = rng or random.Random()

    async def execute(self, run_id: int) -> None:
        run = await self.runs.begin_attempt(run_id)
        if run is None or run.answered_at is not None or run.status == "dead":
            return
        # The log lines of this attempt carry the trigger's correlation id (and the run's id and route).
        correlation = run.inputs.get("correlation_id")
        with structlog.contextvars.bound_contextvars(correlation_id=correlation, run_id=run.id, route=run.route):
            await self._attempt(run)

    async def _attempt(self, run: Run) -> None:
        if run.status in ("queued", "running"):
            run = await self._work(run)
            if run.answered_at is not None:
                return  # answered with its end
        if run.workflow_id is not None:
            await self._answer(run)
        elif run.status == "failed":
            await self.runs.mark_dead(run.id, run.error or "failed")

    async def _work(self, run: Run) -> Run:
        try:
            result = await self._do(run)
        except (MappingError, BridgeConfigError) as exc:
            return await self.runs.finish(run.id, "failed", error=str(exc))
        except (BitrixError, ReceiverError) as exc:
            if exc.retryable or exc.uncertain:
                await self._retry_later(run, str(exc))
            return await self.runs.finish(run.id, "failed", error=str(exc))
        except Busy as exc:
            await self._retry_later(run, str(exc))
            return await self.runs.finish(run.id, "failed", error=str(exc))
        except (psycopg.errors.DataError, psycopg.errors.IntegrityError) as exc:
            # Not an outage (those go back to the queue, see runs.retry.guarded): the database refuses what the
            # run stores (a record's text PostgreSQL cannot hold, say), and would refuse it on every attempt.
            reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            return await self.runs.finish(
                run.id, "failed", error=f"the database refused what this run stores: {reason}"
            )
        except RetryRun:
            raise
        target_id = result.target_deal_id or result.target_ref
        log.info("bridge.delivered", run_id=run.id, route=run.route, action=result.action, target=target_id)
        route = self.routes.routes.get(run.route or "")
        # A status run's record is the target's; a delivery's result names the target's record too.
        target = route.target_entity.name if route is not None else "deal"
        endpoint = route.target if route is not None and not self.routes.portals[route.target].is_portal else None
        outcome = _outcome(result, target, endpoint)
        if run.workflow_id is not None and _waits(run):
            # The workflow hears the delivery before its end is stored, so the end and the answer are one write. A
            # worker dying between them leaves the run running: its next attempt finds the delivery in the id map
            # (nothing written again) and answers again, which a workflow already answered ignores.
            try:
                await self._send_answer(run, "succeeded", outcome)
            except BitrixError:
                return await self.runs.finish(run.id, "succeeded", outcome=outcome)  # _answer tries again
            return await self.runs.finish(run.id, "succeeded", outcome=outcome, answered=True)
        return await self.runs.finish(run.id, "succeeded", outcome=outcome)

    async def _do(self, run: Run) -> DeliveryResult:
        route = self.routes.routes.get(run.route or "")
        if route is None:
            raise BridgeConfigError(f"route {run.route!r} is not in the route file")
        deal_id = int(run.inputs["deal_id"])
        target_end = await self.connections.target(self.routes.portals[route.target])
        source = None if run.trigger == "inbound" else await self.connections.open(self.routes.portals[route.source])
        route = await self.kinds.route(
            route,
            None if source is None else (source.key, source.portal),
            None if isinstance(target_end, Receiver) else (target_end.key, target_end.portal),
        )
        other = _other_process(route, run)
        if other is not None:
            return DeliveryResult(None, None, "skipped", note=other)
        target = self.deliverer.target(target_end)
        recorder = self.runs.recorder(run.id)
        # A retry, or a replay, may follow a write that happened: ``repeated`` looks the record up before writing.
        repeated = run.attempts > 1 or int(run.inputs.get("replays") or 0) > 0
        if source is None:  # your system POSTed the record: nothing to read, nothing to write back
            posted = PostedSource(inbound_record(run.inputs["inbound"], deal_id, route.name))
            return await self.deliverer.deliver(
                route, posted, target, deal_id, run_id=run.id, repeated=repeated, observer=recorder
            )
        if run.trigger == "status":
            if isinstance(target_end, Receiver):
                raise BridgeConfigError(f"route {route.name!r} hands over to an endpoint: no status comes back by hook")
            return await self.status.run(route, source, target_end, deal_id, recorder)
        event_stages = route.triggers.event_stages if run.trigger == "event" else None
        result = await self.deliverer.deliver(
            route,
            PortalSource(source),
            target,
            deal_id,
            run_id=run.id,
            repeated=repeated,
            observer=recorder,
            only_stages=event_stages,
        )
        fields_back = route.status_back is not None and bool(route.status_back.fields)
        if isinstance(target_end, Receiver):
            if fields_back and result.answer is not None:  # the endpoint's id (and answer) written to the source
                await self.status.from_answer(route, source, target_end, deal_id, result, recorder)
            return result
        if fields_back and result.target_deal_id and (result.action == "created" or repeated):
            # The partner sees the target deal (its ID, its URL) as soon as it exists, not at its first move.
            await self.status.run(route, source, target_end, result.target_deal_id, recorder)
        return result

    async def _send_answer(self, run: Run, status: str, outcome: dict[str, Any] | None) -> None:
        """``bizproc.event.send``: the target record's id and URL, or the error."""
        if status == "succeeded":
            values: dict[str, Any] = dict((outcome or {}).get("values") or {})
            message = str((outcome or {}).get("message") or "")
        else:
            values, message = {}, f"b24bridge: {run.error or 'the delivery failed'}"
        params = {"EVENT_TOKEN": run.event_token, "RETURN_VALUES": values, "LOG_MESSAGE": message}
        # The robot ran in an installed b24bridge: the run's portal, whatever the route says (or if none exists).
        portal = await self.connections.registry.connect(run.member_id)
        await portal.call("bizproc.event.send", params, observer=self.runs.recorder(run.id))

    async def _answer(self, run: Run) -> None:
        """The bridge robot's workflow hears the target deal's id and URL, or the error."""
        if not _waits(run):
            await self.runs.mark_answered(run.id)
            if run.status == "failed":
                await self.runs.mark_dead(run.id, run.error or "failed")
            return
        try:
            await self._send_answer(run, run.status, run.outcome)
        except BitrixError as exc:
            if isinstance(exc, BitrixError) and (exc.retryable or exc.uncertain):
                await self._retry_later(run, f"answer: {exc}", keep_status=True)
            await self.runs.mark_dead(run.id, f"{run.error + '; ' if run.error else ''}the answer failed: {exc}")
            return
        await self.runs.mark_answered(run.id)
        if run.status == "failed":
            await self.runs.mark_dead(run.id, run.error or "failed")

    async def _retry_later(self, run: Run, error: str, *, keep_status: bool = False) -> None:
        """Raise :class:`RetryRun` with the schedule's next pause; return if the schedule is spent."""
        pause = next_pause(self.schedule, run.attempts, self.rng.uniform(-1.0, 1.0), None)
        if pause is None:
            return
        if not keep_status:
            await self.runs.retry_scheduled(run, error, pause)
        raise RetryRun(error, pause)


def _waits(run: Run) -> bool:
    """The workflow waits for the answer (the robot subscribes, as it does unless told otherwise)."""
    return str(run.inputs.get("use_subscription", "Y")) != "N"


def _other_process(route: Route, run: Run) -> str | None:
    """Why a run of a route that names its smart process by title is not this route's (another process's item)."""
    kind = route.target_entity if run.trigger == "status" else route.source_entity
    found = record_id_of(run.document_id)
    if not kind.is_item or found is None or kind.takes(found[0]):
        return None
    return f"the item is of smart process {found[0].entity_type_id}, this route's is {kind.entity_type_id}"


def _outcome(result: DeliveryResult, target: str = "deal", endpoint: str | None = None) -> dict[str, Any]:
    if endpoint is not None:
        message = f"Handed to {endpoint}: {result.action}" + (
            f", its id {result.target_ref}" if result.target_ref else ""
        )
    else:
        message = f"{target.capitalize()} {result.target_deal_id} {result.action} in the target"
    return {
        "values": result.values(),
        "message": message,
        "action": result.action,
        "changed": result.changed,
        "contact_id": result.contact_id,
        "company_id": result.company_id,
        "note": result.note,
        "target_ref": result.target_ref,
    }
