"""SQL of the robots domain: what we registered in each portal (``robot_registrations``, migration 0004)."""

from __future__ import annotations

from typing import Any

from psycopg import AsyncConnection

Conn = AsyncConnection[Any]


async def registrations(conn: Conn, member_id: str) -> dict[str, str]:
    """Code -> hash of the definition we last registered in this portal."""
    cur = await conn.execute("SELECT code, definition_hash FROM robot_registrations WHERE member_id = %s", (member_id,))
    return {str(code): str(digest) for code, digest in await cur.fetchall()}


async def registered_codes(conn: Conn) -> dict[str, list[str]]:
    """Member id -> codes of the robots we registered there, for every portal at once (what the admin page shows)."""
    cur = await conn.execute("SELECT member_id, code FROM robot_registrations ORDER BY member_id, code")
    codes: dict[str, list[str]] = {}
    for member_id, code in await cur.fetchall():
        codes.setdefault(str(member_id), []).append(str(code))
    return codes


async def save(conn: Conn, member_id: str, code: str, definition_hash: str) -> None:
    await conn.execute(
        """
        INSERT INTO robot_registrations (member_id, code, definition_hash) VALUES (%s, %s, %s)
        ON CONFLICT (member_id, code)
        DO UPDATE SET definition_hash = EXCLUDED.definition_hash, registered_at = now()
        """,
        (member_id, code, definition_hash),
    )


async def forget(conn: Conn, member_id: str, codes: list[str]) -> None:
    if codes:
        await conn.execute(
            "DELETE FROM robot_registrations WHERE member_id = %s AND code = ANY(%s)", (member_id, codes)
        )
