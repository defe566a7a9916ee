"""Accepting robot calls: checked, deduplicated, stored with their job, answered at once.

The portal's proof of origin is checked from memory (:class:`~b24bridge.portals.directory.PortalDirectory`); the
run and its job are stored together, in one transaction shared with the calls that arrive at the same time, or kept
in the local spool while the database is away (:mod:`b24bridge.intake`). The portal waits for no one and never
retries, so whatever is decided here is final; the job (:mod:`.runner`) does the work and answers the workflow.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from b24bridge import forms
from b24bridge.intake.service import Intake, IntakeUnavailable
from b24bridge.observability import get_logger
from b24bridge.portals.directory import UNKNOWN, PortalDirectory
from b24bridge.portals.schemas import Check, portal_auth
from b24bridge.runs import metrics
from b24bridge.runs.schemas import NewRun

from . import tasks
from .registry import InvalidInput, Robot
from .schemas import CallAnswer

log = get_logger(__name__)

# Only what identifies the portal and the acting user is kept from ``auth[...]``: tokens never reach the log.
_AUTH_KEPT = ("member_id", "domain", "user_id", "client_endpoint", "server_endpoint", "scope", "status")
# A robot CODE as bizproc.robot.add accepts it (REFERENCE 5.2), with room for case; the path is stored with the run.
_CODE = re.compile(r"[A-Za-z0-9._-]{1,128}")
# The run's deduplication key is one B-tree index entry (at most ~2.7 KB): these caps keep it well inside.
_MAX_WORKFLOW_ID = 255
_MAX_EVENT_TOKEN = 1024
# Ten years: a robot's timeout is set in its settings in s/m/h/d; anything longer is not a timeout.
_MAX_TIMEOUT = 10 * 366 * 86400


@dataclass(frozen=True)
class RobotCall:
    """A robot call as the portal sent it (REFERENCE 5.4), every field checked; nothing here is trusted yet."""

    code: str
    member_id: str | None
    application_token: str | None
    workflow_id: str
    event_token: str
    document_id: list[str]
    properties: dict[str, Any]
    inputs: dict[str, Any]  # what the run keeps of the call (no tokens)
    timeout: int | None


def read_call(code: str, form: Mapping[str, Any]) -> RobotCall:
    """The call in ``form``, or a :class:`~b24bridge.forms.FormError` naming the field: every value is checked for
    type, length and range here, before anything touches the database."""
    if not _CODE.fullmatch(code):
        raise forms.FormError("path: not a robot code", field="code")
    member_id, application_token = portal_auth(form)
    auth = {key: forms.optional_text(form, "auth", key) for key in _AUTH_KEPT}
    properties = forms.mapping(form, "properties")
    for key, value in properties.items():
        if not isinstance(value, str):  # a Multiple property: a list of values, nothing deeper
            forms.text_list(form, "properties", key, max_items=1000, max_len=forms.DEFAULT_LIMITS.max_value_length)
    timeout = forms.optional_integer(form, "timeout_duration", lo=0, hi=_MAX_TIMEOUT)
    return RobotCall(
        code=code,
        member_id=member_id,
        application_token=application_token,
        workflow_id=forms.text(form, "workflow_id", max_len=_MAX_WORKFLOW_ID),
        event_token=forms.text(form, "event_token", max_len=_MAX_EVENT_TOKEN),
        document_id=forms.text_list(form, "document_id", max_items=8, max_len=255),
        properties=properties,
        inputs={
            "properties": properties,
            "document_type": forms.text_list(form, "document_type", max_items=8, max_len=255) or None,
            # Only an explicit N means "do not wait" (REFERENCE 5.2): anything else is kept as the default, Y.
            "use_subscription": "N" if (forms.optional_text(form, "use_subscription") or "").upper() == "N" else "Y",
            "timeout_duration": None if timeout is None else str(timeout),
            "ts": forms.optional_text(form, "ts", max_len=32),
            "auth": {key: value for key, value in auth.items() if value is not None},
        },
        timeout=timeout,
    )


class RobotIntake:
    def __init__(self, directory: PortalDirectory, intake: Intake, robots: Mapping[str, Robot]) -> None:
        self.directory = directory
        self.intake = intake
        self.robots = robots

    async def accept(self, code: str, form: Mapping[str, Any], correlation_id: str | None = None) -> CallAnswer:
        """``correlation_id`` (the request's) is kept with the run, so the job's log lines carry it too."""
        call = read_call(code, form)  # FormError (a 4xx) before anything touches the database
        # The code is part of an unauthenticated URL: only a declared robot's code may become a metric label.
        label = code if code in self.robots else "unknown"
        if not call.member_id or not call.application_token:
            metrics.inbound("robot", None, label, "refused")
            return CallAnswer(401, "member_id and application_token are required")
        verdict = await self.directory.check(call.member_id, call.application_token)
        if verdict is None:
            log.warning("robots.call_refused", member_id=call.member_id, code=code)
            metrics.inbound("robot", None, label, "refused")
            return CallAnswer(401, "unknown portal or wrong application_token")
        # UNKNOWN: the database is away and this process has not seen the portal; checked when the call is drained.
        check = Check(call.member_id, call.application_token) if verdict is UNKNOWN else None

        status, error, values = "queued", None, {}
        robot = self.robots.get(code)
        if robot is None:
            status, error = "failed", f"robot {code!r} is not declared by this b24bridge (sync robots)"
        else:
            try:
                values = robot.validate(call.properties)
            except InvalidInput as exc:
                status, error = "failed", str(exc)
        run = NewRun(
            member_id=call.member_id,
            robot_code=code,
            workflow_id=call.workflow_id,
            event_token=call.event_token,
            document_id=call.document_id,
            inputs={**call.inputs, "values": values, "correlation_id": correlation_id},
            status=status,
            error=error,
            deadline_at=_deadline(call.timeout),
        )
        try:
            stored = await self.intake.accept(tasks.submission(run, check))
        except IntakeUnavailable:
            metrics.inbound("robot", call.member_id, label, "unavailable")
            return CallAnswer(503, "the database and the local spool are unavailable; nothing was stored")
        if stored.outcome == "duplicate":
            metrics.inbound("robot", call.member_id, label, "duplicate")
            return CallAnswer(200, "duplicate call, already accepted")
        if error is not None:
            log.info("robots.call_invalid", member_id=call.member_id, code=code, run_id=stored.run_id, error=error)
        metrics.inbound("robot", call.member_id, label, "invalid" if error else stored.outcome)
        return CallAnswer(200, "accepted", run_id=stored.run_id, spooled=stored.outcome == "spooled")


def _deadline(timeout: int | None) -> dt.datetime | None:
    # Counted from our own clock on receipt, not the portal's ``ts``: clocks of two machines disagree.
    return dt.datetime.now(dt.UTC) + dt.timedelta(seconds=timeout) if timeout else None
