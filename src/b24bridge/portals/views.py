"""What ``b24bridge portals list|show`` print: rich tables of the registry, never a token or a hash."""

from __future__ import annotations

from typing import Any

from rich.table import Table

from .repository import PortalRow


def portals_table(rows: list[PortalRow]) -> Table:
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


def portal_detail(row: PortalRow, history: list[dict[str, Any]]) -> Table:
    out = Table("field", "value", title=f"portal {row.member_id}")
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


def public(row: PortalRow) -> dict[str, Any]:
    """A portal row without its secrets (for ``--json``): encrypted tokens and the token hash are left out."""
    hidden = {"access_token_enc", "refresh_token_enc", "application_token_hash"}
    shown = {name: value for name, value in row.__dict__.items() if name not in hidden}
    shown["tokens_stored"] = bool(row.access_token_enc)
    shown["application_token_known"] = bool(row.application_token_hash)
    return shown
