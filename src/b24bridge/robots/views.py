"""What ``b24bridge robots sync|list`` do and print (rich tables); the typer commands live in ``cli.py``."""

from __future__ import annotations

from rich.table import Table

from b24bridge.context import open_context
from b24bridge.settings import Settings

from . import service


async def sync(settings: Settings, member_id: str | None) -> tuple[Table, bool]:
    """The sync report per portal, and whether every portal synced."""
    async with open_context(settings):
        reports = await service.sync_all(member_id)
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
    return out, all(report.error is None for report in reports)


async def states(settings: Settings, member_id: str | None) -> Table:
    async with open_context(settings):
        found = await service.robot_states(member_id)
    out = Table("portal", "robot", "declared", "registered", "state")
    for state in found:
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
