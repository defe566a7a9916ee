"""Robot calls: accepted (checked, deduplicated, stored and queued in one transaction) and run by a job.

A call's life: ``accept_call`` (HTTP handler) stores a run and defers its job in the same database transaction,
so a run is never stored without its job nor a job queued for a run that was rolled back; ``execute_run`` (the
job) does the robot's work and answers the workflow through ``bizproc.event.send``. Whatever goes wrong - invalid
inputs, a portal error, a deadline about to pass - the workflow gets an answer with the error, so the business
process never hangs until its timeout.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from b24bridge.bitrix import BitrixError
from b24bridge.context import current
from b24bridge.observability import get_logger
from b24bridge.portals import service as portals
from b24bridge.runs import repository as runs
from b24bridge.runs.schemas import NewRun, Run
from b24bridge.runs.service import RecordingPortal

from . import repository
from .form import parse_form
from .registry import InvalidInput, Robot, declared
from .schemas import CallAnswer, RetryRun, RobotState, SyncReport

log = get_logger(__name__)

TASK = "robots:run"
MAX_ATTEMPTS = 5
# Time kept before a robot's timeout to send the (error) answer, so the workflow never closes by timeout.
ANSWER_RESERVE = dt.timedelta(seconds=5)
# Only what identifies the portal and the acting user is kept from ``auth[...]``: tokens never reach the log.
_AUTH_KEPT = ("member_id", "domain", "user_id", "client_endpoint", "server_endpoint", "scope", "status")


# --- accepting a call -------------------------------------------------------------------------------------


async def accept_call(code: str, body: str) -> CallAnswer:
    form = parse_form(body)
    auth = _mapping(form.get("auth"))
    member_id, app_token = auth.get("member_id"), auth.get("application_token")
    if not isinstance(member_id, str) or not isinstance(app_token, str) or not member_id or not app_token:
        return CallAnswer(401, "member_id and application_token are required")
    if await portals.verify_application_token(member_id, app_token) is None:
        log.warning("robots.call_refused", member_id=member_id, code=code)
        return CallAnswer(401, "unknown portal or wrong application_token")
    workflow_id, event_token = form.get("workflow_id"), form.get("event_token")
    if not isinstance(workflow_id, str) or not isinstance(event_token, str) or not workflow_id or not event_token:
        return CallAnswer(400, "workflow_id and event_token are required")

    raw = _mapping(form.get("properties"))
    status, error, values = "queued", None, {}
    robot = declared().get(code)
    if robot is None:
        status, error = "failed", f"robot {code!r} is not declared by this b24bridge (sync robots)"
    else:
        try:
            values = robot.validate(raw)
        except InvalidInput as exc:
            status, error = "failed", str(exc)
    document_id = form.get("document_id")
    run = NewRun(
        member_id=member_id,
        robot_code=code,
        workflow_id=workflow_id,
        event_token=event_token,
        document_id=[str(part) for part in document_id] if isinstance(document_id, list) else [],
        inputs={
            "properties": raw,
            "values": values,
            "document_type": form.get("document_type"),
            "use_subscription": form.get("use_subscription", "Y"),
            "timeout_duration": form.get("timeout_duration"),
            "ts": form.get("ts"),
            "auth": {key: auth[key] for key in _AUTH_KEPT if key in auth},
        },
        status=status,
        error=error,
        deadline_at=_deadline(form.get("timeout_duration")),
    )
    async with current().database.pool.connection() as conn, conn.transaction():
        run_id = await runs.insert(conn, run)
        if run_id is None:
            return CallAnswer(200, "duplicate call, already accepted", duplicate=True)
        # The job row is inserted on this same connection, inside this transaction (procrastinate's
        # ``connection=``): both are committed together or not at all.
        await (
            current()
            .jobs.configure_task(TASK, lock=f"run:{run_id}", queueing_lock=f"run:{run_id}", connection=conn)
            .defer_async(run_id=run_id)
        )
    if error is not None:
        log.info("robots.call_invalid", member_id=member_id, code=code, run_id=run_id, error=error)
    return CallAnswer(200, "accepted", run_id=run_id)


def _mapping(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _deadline(timeout: Any) -> dt.datetime | None:
    # Counted from our own clock on receipt, not the portal's ``ts``: clocks of two machines disagree.
    try:
        seconds = int(str(timeout))
    except ValueError:
        return None
    return dt.datetime.now(dt.UTC) + dt.timedelta(seconds=seconds) if seconds > 0 else None


# --- running it -------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _RunContext:
    portal: RecordingPortal
    origin_id: str
    repeated: bool

    async def call(self, method: str, params: dict[str, Any] | None = None) -> Any:
        return await self.portal.call(method, params)


def origin_id(run: Run) -> str:
    """Stable across attempts and unique per robot call: what ORIGIN_ID carries to find a run's own records."""
    event = hashlib.sha256(run.event_token.encode()).hexdigest()[:16]
    return f"run:{run.member_id}:{run.workflow_id}:{event}"


async def execute_run(run_id: int) -> None:
    run = await runs.start_attempt(run_id)
    if run is None:
        log.warning("robots.run_missing", run_id=run_id)
        return
    if run.answered_at is not None:
        return  # a duplicate job or a re-run after the answer: nothing left to do
    if not run.final:
        run = await _work(run)
    await _answer(run)


async def _work(run: Run) -> Run:
    robot = declared().get(run.robot_code)
    if robot is None or robot.perform is None:
        await runs.finish(run.id, "failed", None, f"robot {run.robot_code!r} is no longer declared")
        return await _reload(run.id)
    budget = _time_left(run)
    try:
        portal = await portals.connect(run.member_id)
        context = _RunContext(RecordingPortal(portal, run.id), origin_id(run), repeated=run.attempts > 1)
        async with asyncio.timeout(budget.total_seconds() if budget is not None else None):
            outcome = await robot.perform(context, dict(run.inputs.get("values") or {}))
    except BitrixError as exc:
        if (exc.retryable or exc.uncertain) and run.attempts < MAX_ATTEMPTS and _may_retry(run):
            await runs.requeue(run.id, str(exc))
            log.info("robots.run_retry", run_id=run.id, attempt=run.attempts, error=str(exc))
            raise RetryRun(str(exc)) from None
        await runs.finish(run.id, "uncertain" if exc.uncertain else "failed", None, str(exc))
    except TimeoutError:
        # A write may have been in flight; the answer must go now, before the robot's own timeout.
        await runs.finish(run.id, "uncertain", None, "no time left before the robot's timeout")
    except Exception as exc:  # a bug or an unusable portal: recorded and answered, never left hanging
        log.exception("robots.run_crashed", run_id=run.id)
        await runs.finish(run.id, "failed", None, f"{type(exc).__name__}: {exc}")
    else:
        await runs.finish(run.id, "succeeded", {"values": outcome.values, "message": outcome.message}, None)
    return await _reload(run.id)


async def _answer(run: Run) -> None:
    if str(run.inputs.get("use_subscription", "Y")) == "N":
        await runs.mark_answered(run.id)  # the workflow does not wait for us
        return
    if run.status == "succeeded" and run.outcome is not None:
        values, message = dict(run.outcome.get("values") or {}), str(run.outcome.get("message") or "")
    else:
        values, message = {}, f"b24bridge: {run.error or 'the robot failed'}"
    params = {"EVENT_TOKEN": run.event_token, "RETURN_VALUES": values, "LOG_MESSAGE": message}
    try:
        portal = await portals.connect(run.member_id)
        await RecordingPortal(portal, run.id).call("bizproc.event.send", params)
    except BitrixError as exc:
        # event.send is idempotent (a second send is ignored by the workflow), so any unclear failure retries.
        if (exc.retryable or exc.uncertain) and _may_retry(run):
            raise RetryRun(f"answer: {exc}") from None
        log.warning("robots.answer_failed", run_id=run.id, error=str(exc))
        await runs.mark_answered(run.id, error=f"{run.error + '; ' if run.error else ''}answer failed: {exc}")
        return
    except Exception as exc:
        log.warning("robots.answer_failed", run_id=run.id, error=f"{type(exc).__name__}: {exc}")
        await runs.mark_answered(run.id, error=f"answer failed: {type(exc).__name__}: {exc}")
        return
    await runs.mark_answered(run.id)


def _time_left(run: Run) -> dt.timedelta | None:
    if run.deadline_at is None:
        return None
    return max(run.deadline_at - dt.datetime.now(dt.UTC) - ANSWER_RESERVE, dt.timedelta(0))


def _may_retry(run: Run) -> bool:
    """Another attempt only if it can still finish before the robot's timeout (first backoff is short)."""
    left = _time_left(run)
    return left is None or left > dt.timedelta(seconds=10)


async def _reload(run_id: int) -> Run:
    run = await runs.get(run_id)
    assert run is not None
    return run


# --- registering robots in portals ------------------------------------------------------------------------


async def sync_portal(member_id: str, robots: Mapping[str, Robot] | None = None) -> SyncReport:
    """Make the declared robots true in one portal: add missing, update changed, delete undeclared ones.

    ``bizproc.robot.list`` says what is there (only this application's codes); the stored hash of what we
    registered says whether a present robot is current. Running it twice changes nothing the second time.
    """
    robots = declared() if robots is None else robots
    public_url = current().settings.public_url
    if not public_url:
        raise RuntimeError("B24BRIDGE_PUBLIC_URL is not set: robots need a handler URL the portal can reach")
    report = SyncReport(member_id)
    portal = await portals.connect(member_id)
    listed = await portal.call("bizproc.robot.list")
    present = {str(code) for code in listed} if isinstance(listed, list) else set()
    stored = await repository.registrations(member_id)
    for code, robot in robots.items():
        params = robot.to_bitrix(public_url)
        digest = robot.definition_hash(public_url)
        if code not in present:
            try:
                await portal.call("bizproc.robot.add", params)
            except BitrixError as exc:
                # Listed a moment ago as absent, present now: another sync won the race; make it ours.
                if exc.code != "ERROR_ACTIVITY_ALREADY_INSTALLED":
                    raise
                await portal.call("bizproc.robot.update", {"CODE": code, "FIELDS": _fields(params)})
            report.added.append(code)
        elif stored.get(code) != digest:
            await portal.call("bizproc.robot.update", {"CODE": code, "FIELDS": _fields(params)})
            report.updated.append(code)
        else:
            report.unchanged.append(code)
        await repository.save(member_id, code, digest)
    for code in sorted(present - set(robots)):
        try:
            await portal.call("bizproc.robot.delete", {"CODE": code})
        except BitrixError as exc:
            if exc.code != "ERROR_ACTIVITY_NOT_FOUND":
                raise
        report.deleted.append(code)
    await repository.forget(member_id, [code for code in stored if code not in robots])
    log.info("robots.synced", member_id=member_id, added=report.added, updated=report.updated, deleted=report.deleted)
    return report


def _fields(params: Mapping[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in params.items() if key != "CODE"}


async def sync_all(member_id: str | None = None) -> list[SyncReport]:
    """Sync one portal or every active one; a failing portal is reported and does not stop the others."""
    if member_id is not None:
        targets = [member_id]
    else:
        targets = [p.member_id for p in await portals.list_portals(status="active")]
    reports = []
    for target in targets:
        try:
            reports.append(await sync_portal(target))
        except Exception as exc:
            log.warning("robots.sync_failed", member_id=target, error=f"{type(exc).__name__}: {exc}")
            reports.append(SyncReport(target, error=f"{type(exc).__name__}: {exc}"))
    return reports


async def robot_states(member_id: str | None = None) -> list[RobotState]:
    """Declared versus registered, per portal (what ``b24bridge robots list`` shows)."""
    robots = declared()
    public_url = current().settings.public_url or ""
    if member_id is not None:
        targets = [member_id]
    else:
        targets = [p.member_id for p in await portals.list_portals(status="active")]
    states: list[RobotState] = []
    for target in targets:
        portal = await portals.connect(target)
        listed = await portal.call("bizproc.robot.list")
        present = {str(code) for code in listed} if isinstance(listed, list) else set()
        stored = await repository.registrations(target)
        for code in sorted(set(robots) | present):
            robot = robots.get(code)
            current_hash = robot.definition_hash(public_url) if robot is not None else None
            states.append(
                RobotState(target, code, robot is not None, code in present, stored.get(code) == current_hash)
            )
    return states


async def on_portal_installed(member_id: str) -> None:
    """Install hook: a new or re-installed portal gets the robots (an app update removes them, REFERENCE 5.1)."""
    try:
        await sync_portal(member_id)
    except Exception as exc:  # the installation itself stands; ``b24bridge robots sync`` can finish the job
        log.warning("robots.install_sync_failed", member_id=member_id, error=f"{type(exc).__name__}: {exc}")


if on_portal_installed not in portals.on_installed:
    portals.on_installed.append(on_portal_installed)
