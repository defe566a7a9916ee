"""SQL for ``portals`` and ``portal_events``. Values arrive already encrypted/hashed; nothing here sees a token."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from psycopg import AsyncConnection
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

_COLUMNS = """member_id, domain, client_endpoint, server_endpoint, scope, status, burst, drain, operating_limit,
    access_token_enc, refresh_token_enc, token_expires_at, application_token_hash, app_version,
    installed_at, updated_at, uninstalled_at"""


@dataclass
class PortalRow:
    member_id: str
    domain: str
    client_endpoint: str
    server_endpoint: str | None
    scope: str
    status: str
    burst: int
    drain: float
    operating_limit: float
    access_token_enc: str | None
    refresh_token_enc: str | None
    token_expires_at: datetime | None
    application_token_hash: str | None
    app_version: int | None
    installed_at: datetime
    updated_at: datetime
    uninstalled_at: datetime | None


@dataclass
class InstallValues:
    """What an installation writes. ``application_token_hash`` None keeps the stored one (OAuth code flow)."""

    member_id: str
    domain: str
    client_endpoint: str
    server_endpoint: str | None
    scope: str
    access_token_enc: str
    refresh_token_enc: str
    token_expires_at: datetime | None
    application_token_hash: str | None
    app_version: int | None


Conn = AsyncConnection[Any]


async def get(conn: Conn, member_id: str, *, lock: bool = False) -> PortalRow | None:
    suffix = " FOR UPDATE" if lock else ""
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(f"SELECT {_COLUMNS} FROM portals WHERE member_id = %s{suffix}", (member_id,))
        row = await cur.fetchone()
    return PortalRow(**row) if row else None


_GET_FOR_CHECK = "SELECT {} FROM (VALUES (1)) AS one LEFT JOIN portals p ON p.member_id = %s".format(
    ", ".join(f"p.{name.strip()}" for name in _COLUMNS.split(","))
)


async def get_for_check(conn: Conn, member_id: str) -> PortalRow | None:
    """:func:`get` as a token check needs it: the database answers one row either way (NULLs for an unknown
    member_id), so "no such portal" costs what "this portal, wrong token" does and timing tells neither apart."""
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(_GET_FOR_CHECK, (member_id,))
        row = await cur.fetchone()
    return PortalRow(**row) if row and row["member_id"] is not None else None


async def list_all(conn: Conn, status: str | None = None) -> list[PortalRow]:
    async with conn.cursor(row_factory=dict_row) as cur:
        if status is None:
            await cur.execute(f"SELECT {_COLUMNS} FROM portals ORDER BY domain, member_id")
        else:
            await cur.execute(f"SELECT {_COLUMNS} FROM portals WHERE status = %s ORDER BY domain, member_id", (status,))
        return [PortalRow(**row) for row in await cur.fetchall()]


async def upsert_install(conn: Conn, v: InstallValues) -> PortalRow:
    """One row per member_id: a re-install overwrites endpoints and tokens and makes the portal active again."""
    cur = conn.cursor(row_factory=dict_row)
    await cur.execute(
        f"""
        INSERT INTO portals (member_id, domain, client_endpoint, server_endpoint, scope, status,
                             access_token_enc, refresh_token_enc, token_expires_at, application_token_hash,
                             app_version)
        VALUES (%(member_id)s, %(domain)s, %(client_endpoint)s, %(server_endpoint)s, %(scope)s, 'active',
                %(access_token_enc)s, %(refresh_token_enc)s, %(token_expires_at)s, %(application_token_hash)s,
                %(app_version)s)
        ON CONFLICT (member_id) DO UPDATE SET
            domain = EXCLUDED.domain,
            client_endpoint = EXCLUDED.client_endpoint,
            server_endpoint = COALESCE(EXCLUDED.server_endpoint, portals.server_endpoint),
            scope = EXCLUDED.scope,
            status = 'active',
            access_token_enc = EXCLUDED.access_token_enc,
            refresh_token_enc = EXCLUDED.refresh_token_enc,
            token_expires_at = EXCLUDED.token_expires_at,
            application_token_hash = COALESCE(EXCLUDED.application_token_hash, portals.application_token_hash),
            app_version = COALESCE(EXCLUDED.app_version, portals.app_version),
            installed_at = CASE WHEN portals.status = 'uninstalled' THEN now() ELSE portals.installed_at END,
            updated_at = now(),
            uninstalled_at = NULL
        RETURNING {_COLUMNS}
        """,
        v.__dict__,
    )
    row = await cur.fetchone()
    assert row is not None  # an upsert always returns its row
    return PortalRow(**row)


async def save_tokens(
    conn: Conn,
    member_id: str,
    access_enc: str,
    refresh_enc: str,
    expires_at: datetime | None,
    client_endpoint: str | None,
) -> bool:
    """Store a refreshed pair; only for a portal that still has tokens (an uninstall in between wins)."""
    cur = await conn.execute(
        """
        UPDATE portals SET access_token_enc = %s, refresh_token_enc = %s, token_expires_at = %s,
                           client_endpoint = COALESCE(%s, client_endpoint), updated_at = now()
        WHERE member_id = %s AND status <> 'uninstalled'
        """,
        (access_enc, refresh_enc, expires_at, client_endpoint, member_id),
    )
    return cur.rowcount > 0


async def mark_auth_lost(conn: Conn, member_id: str) -> bool:
    cur = await conn.execute(
        "UPDATE portals SET status = 'auth_lost', updated_at = now() WHERE member_id = %s AND status = 'active'",
        (member_id,),
    )
    return cur.rowcount > 0


async def mark_uninstalled(conn: Conn, member_id: str) -> None:
    # The application token dies with the installation too: a new install brings a new one.
    await conn.execute(
        """
        UPDATE portals SET status = 'uninstalled', access_token_enc = NULL, refresh_token_enc = NULL,
                           token_expires_at = NULL, application_token_hash = NULL,
                           uninstalled_at = now(), updated_at = now()
        WHERE member_id = %s
        """,
        (member_id,),
    )


async def set_domain(conn: Conn, member_id: str, domain: str, client_endpoint: str) -> None:
    await conn.execute(
        "UPDATE portals SET domain = %s, client_endpoint = %s, updated_at = now() WHERE member_id = %s",
        (domain, client_endpoint, member_id),
    )


async def add_event(conn: Conn, member_id: str, kind: str, detail: dict[str, Any] | None = None) -> None:
    await conn.execute(
        "INSERT INTO portal_events (member_id, kind, detail) VALUES (%s, %s, %s)",
        (member_id, kind, Jsonb(detail or {})),
    )


async def events(conn: Conn, member_id: str, limit: int = 20) -> list[dict[str, Any]]:
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(
            "SELECT kind, detail, at FROM portal_events WHERE member_id = %s ORDER BY id DESC LIMIT %s",
            (member_id, limit),
        )
        return list(await cur.fetchall())


async def use_oauth_state(conn: Conn, nonce: str, expires_at: datetime) -> bool:
    """Mark an OAuth state's nonce as used; False if it already was. Expired marks are dropped on the way (a state
    past its expiry is refused before it gets here, so its mark is no longer needed)."""
    await conn.execute("DELETE FROM oauth_states WHERE expires_at < now()")
    cur = await conn.execute(
        "INSERT INTO oauth_states (nonce, expires_at) VALUES (%s, %s) ON CONFLICT DO NOTHING RETURNING 1",
        (nonce, expires_at),
    )
    return await cur.fetchone() is not None
