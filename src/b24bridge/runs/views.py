"""What ``b24bridge runs list|show`` print: rich tables of the run log (inputs never hold tokens)."""

from __future__ import annotations

import json

from rich.table import Table

from .schemas import Run, RunCall


def _ts(value: object) -> str:
    return f"{value:%Y-%m-%d %H:%M:%S}" if value is not None else ""


def runs_table(runs: list[Run]) -> Table:
    out = Table("id", "kind", "portal", "robot/route", "workflow", "status", "attempts", "created", "finished", "error")
    for run in runs:
        out.add_row(
            str(run.id),
            run.kind,
            run.member_id,
            run.robot_code or run.route or "",
            run.workflow_id or "",
            run.status,
            str(run.attempts),
            _ts(run.created_at),
            _ts(run.finished_at),
            (run.error or "")[:80],
        )
    return out


def run_detail(run: Run, calls: list[RunCall]) -> Table:
    out = Table("field", "value", title=f"run {run.id}")
    for name in ("kind", "member_id", "robot_code", "route", "trigger", "workflow_id", "status", "attempts", "error"):
        out.add_row(name, str(getattr(run, name) or ""))
    out.add_row("document_id", "/".join(run.document_id))
    out.add_row("inputs", json.dumps(run.inputs, ensure_ascii=False, indent=1))
    out.add_row("outcome", json.dumps(run.outcome, ensure_ascii=False) if run.outcome is not None else "")
    for name in ("created_at", "started_at", "finished_at", "answered_at", "deadline_at"):
        out.add_row(name, _ts(getattr(run, name)))
    for call in calls:
        error = f" {call.error}" if call.error else ""
        out.add_row(f"call {_ts(call.at)}", f"{call.method} {call.status} {call.duration * 1000:.0f} ms{error}")
    return out
