"""What ``b24bridge robots sync|list`` print (rich tables)."""

from __future__ import annotations

from rich.table import Table

from .schemas import RobotState, SyncReport


def sync_table(reports: list[SyncReport]) -> Table:
    out = Table("portal", "added", "updated", "deleted", "unchanged", "error")
    for report in reports:
        out.add_row(
            report.member_id,
            ", ".join(report.added),
            ", ".join(report.updated),
            ", ".join(report.deleted),
            ", ".join(report.unchanged),
            report.error or "",
        )
    return out


def states_table(states: list[RobotState]) -> Table:
    out = Table("portal", "robot", "declared", "registered", "state")
    for state in states:
        if state.declared and state.registered:
            verdict = "current" if state.current else "outdated (run robots sync)"
        elif state.declared:
            verdict = "missing (run robots sync)"
        else:
            verdict = "no longer declared (robots sync deletes it)"
        out.add_row(
            state.member_id, state.code, "yes" if state.declared else "no", "yes" if state.registered else "no", verdict
        )
    return out
