"""What ``b24bridge portals list|show`` print: rich tables of the registry, never a token or a hash."""

from __future__ import annotations

from rich.table import Table

from b24bridge.db import Database
from b24bridge.settings import Settings

from . import repository


async def table(settings: Settings, status: str | None) -> Table:
    async with Database(settings, min_size=0, max_size=1) as database, database.pool.connection() as conn:
        rows = await repository.list_all(conn, status)
    out = Table("member_id", "domain", "status", "scope", "version", "installed", "token expires")
    for row in rows:
        out.add_row(
            row.member_id,
            row.domain,
            row.status,
            row.scope,
            str(row.app_version or ""),
            f"{row.installed_at:%Y-%m-%d %H:%M}",
            f"{row.token_expires_at:%Y-%m-%d %H:%M}" if row.token_expires_at else "",
        )
    return out


async def detail(settings: Settings, member_id: str) -> Table | None:
    async with Database(settings, min_size=0, max_size=1) as database, database.pool.connection() as conn:
        row = await repository.get(conn, member_id)
        history = await repository.events(conn, member_id) if row else []
    if row is None:
        return None
    out = Table("field", "value", title=f"portal {member_id}")
    for name in ("domain", "client_endpoint", "server_endpoint", "status", "scope", "app_version"):
        out.add_row(name, str(getattr(row, name) or ""))
    out.add_row("limits", f"burst {row.burst}, drain {row.drain}/s, operating {row.operating_limit}s")
    out.add_row("tokens", "stored (encrypted)" if row.access_token_enc else "none")
    out.add_row("application token", "stored (hashed)" if row.application_token_hash else "not known yet")
    for name in ("token_expires_at", "installed_at", "updated_at", "uninstalled_at"):
        value = getattr(row, name)
        out.add_row(name, f"{value:%Y-%m-%d %H:%M:%S %Z}" if value else "")
    for event in history:
        out.add_row(f"event {event['at']:%Y-%m-%d %H:%M:%S}", f"{event['kind']} {event['detail']}")
    return out
