"""SQL of the bridge: the id map between portals (``bridge_links``) and the dedupe window (``bridge_dedupe``).

Every function takes its connection first.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

from psycopg import AsyncConnection
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

Conn = AsyncConnection[Any]
# How a creation was claimed: afresh, or taken over from an earlier claim (whose creation may have happened).
Claim = Literal["new", "taken_over"]


@dataclass(frozen=True)
class Link:
    """A target record standing for a source record, and what was last delivered to it (and returned from it)."""

    source_key: str
    target_key: str
    entity: str
    source_id: int
    target_id: int
    route: str
    delivered: dict[str, Any]
    source_modified: str | None
    returned: dict[str, Any]
    target_modified: str | None
    target_ref: str | None = None  # an endpoint's id for the record (its target_id is then ENDPOINT_RECORD)


# target_id of a record held by an HTTPS endpoint (its id is target_ref); 0 is a creation claimed, not done.
ENDPOINT_RECORD = -1

_COLUMNS = (
    "source_key, target_key, entity, source_id, target_id, route, delivered, source_modified, returned,"
    " target_modified, target_ref"
)


async def links(
    conn: Conn, source_key: str, target_key: str, wanted: list[tuple[str, int]]
) -> dict[tuple[str, int], Link]:
    """The links of (entity, source id) pairs between two portals, by pair."""
    found = await links_of(conn, [(source_key, target_key, entity, source_id) for entity, source_id in wanted])
    return {(link.entity, link.source_id): link for link in found}


# (source key, target key, entity, source id): one record's link between two portals.
LinkKey = tuple[str, str, str, int]


async def links_of(conn: Conn, wanted: list[LinkKey]) -> list[Link]:
    """The links of records (between any portals), in one statement; those not linked (or only claimed) are absent."""
    if not wanted:
        return []
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(
            f"""
            SELECT {_COLUMNS} FROM bridge_links
             WHERE target_id <> 0
               AND (source_key, target_key, entity, source_id)
                   IN (SELECT * FROM unnest(%s::text[], %s::text[], %s::text[], %s::bigint[]))
            """,
            ([key[0] for key in wanted], [key[1] for key in wanted], [key[2] for key in wanted],
             [key[3] for key in wanted]),
        )  # fmt: skip
        return [Link(**row) for row in await cur.fetchall()]


async def link_by_target(conn: Conn, route: str, target_key: str, entity: str, target_id: int) -> Link | None:
    """The link of a target record (status back: which source deal does this target deal stand for)."""
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(
            f"""
            SELECT {_COLUMNS} FROM bridge_links
             WHERE route = %s AND target_key = %s AND entity = %s AND target_id = %s AND target_id > 0
             ORDER BY updated_at DESC LIMIT 1
            """,
            (route, target_key, entity, target_id),
        )
        row = await cur.fetchone()
    return None if row is None else Link(**row)


async def save_links(conn: Conn, links: Sequence[Link]) -> None:
    """Insert or update the links, in one round trip (psycopg pipelines ``executemany``)."""
    async with conn.cursor() as cur:
        await cur.executemany(
            """
            INSERT INTO bridge_links (source_key, target_key, entity, source_id, target_id, route, delivered,
                                      source_modified, returned, target_modified, target_ref)
            VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)
            ON CONFLICT (source_key, target_key, entity, source_id) DO UPDATE SET
                target_id = EXCLUDED.target_id, route = EXCLUDED.route, delivered = EXCLUDED.delivered,
                source_modified = EXCLUDED.source_modified, returned = EXCLUDED.returned,
                target_modified = EXCLUDED.target_modified, target_ref = EXCLUDED.target_ref, updated_at = now()
            """,
            [
                (
                    link.source_key,
                    link.target_key,
                    link.entity,
                    link.source_id,
                    link.target_id,
                    link.route,
                    Jsonb(link.delivered),
                    link.source_modified,
                    Jsonb(link.returned),
                    link.target_modified,
                    link.target_ref,
                )
                for link in links
            ],
        )


async def claim_creation(
    conn: Conn,
    source_key: str,
    target_key: str,
    entity: str,
    source_id: int,
    route: str,
    stale_after: dt.timedelta,
    run_id: int,
) -> Claim | None:
    """Claim the creation of the target record for a source record (a placeholder row, ``target_id`` 0, naming the
    run and its attempt), so that deliveries in other processes wait for it instead of creating a second one; None
    when a live attempt holds it. A claim is taken over when its attempt is over (its run ended, or is in a later
    attempt: a killed worker's, an interrupted one's, this run's own earlier one), or when it is older than
    ``stale_after`` (a claim from before claims named their run). A taken-over claim's creation may have happened:
    the caller looks for the record before creating it."""
    cur = await conn.execute(
        """
        INSERT INTO bridge_links (source_key, target_key, entity, source_id, target_id, route, claimed_by,
                                  claimed_attempt)
        VALUES (%(source)s, %(target)s, %(entity)s, %(id)s, 0, %(route)s, %(run)s,
                (SELECT attempts FROM runs WHERE id = %(run)s))
        ON CONFLICT (source_key, target_key, entity, source_id) DO UPDATE
           SET updated_at = now(), claimed_by = EXCLUDED.claimed_by, claimed_attempt = EXCLUDED.claimed_attempt
         WHERE bridge_links.target_id = 0
           AND (bridge_links.updated_at < now() - %(stale)s
                OR (bridge_links.claimed_by IS NOT NULL
                    AND NOT EXISTS (SELECT 1 FROM runs
                                     WHERE runs.id = bridge_links.claimed_by
                                       AND runs.attempts = bridge_links.claimed_attempt
                                       AND runs.status IN ('queued', 'running'))))
        RETURNING xmax = 0 AS fresh
        """,
        {
            "source": source_key,
            "target": target_key,
            "entity": entity,
            "id": source_id,
            "route": route,
            "run": run_id,
            "stale": stale_after,
        },
    )
    row = await cur.fetchone()
    if row is None:
        return None
    return "new" if row[0] else "taken_over"


async def created_target(conn: Conn, source_key: str, target_key: str, entity: str, source_id: int) -> int:
    """The target id of a source record once its creation (claimed elsewhere) is done; 0 while it is not."""
    cur = await conn.execute(
        "SELECT target_id FROM bridge_links"
        " WHERE source_key = %s AND target_key = %s AND entity = %s AND source_id = %s",
        (source_key, target_key, entity, source_id),
    )
    row = await cur.fetchone()
    return 0 if row is None else int(row[0])


async def release_creation(conn: Conn, source_key: str, target_key: str, entity: str, source_id: int) -> None:
    await conn.execute(
        "DELETE FROM bridge_links WHERE source_key = %s AND target_key = %s AND entity = %s AND source_id = %s"
        " AND target_id = 0",
        (source_key, target_key, entity, source_id),
    )


async def claim_dedupe(conn: Conn, claims: list[tuple[str, int]], window: dt.timedelta) -> list[int | None]:
    """Take each ``(key, run_id)`` for ``window``, in one statement: for each, None when the run holds the key now,
    else the run that holds it (taken and unexpired). Each key at most once."""
    keys = [key for key, _ in claims]
    if len(set(keys)) < len(keys):
        raise ValueError("each key is claimed once a statement")
    cur = await conn.execute(
        """
        INSERT INTO bridge_dedupe (key, run_id, expires_at)
        SELECT key, run_id, now() + %s FROM unnest(%s::text[], %s::bigint[]) AS v(key, run_id)
        ON CONFLICT (key) DO UPDATE SET run_id = EXCLUDED.run_id, expires_at = EXCLUDED.expires_at
         WHERE bridge_dedupe.expires_at < now()
        RETURNING key
        """,
        (window, keys, [run_id for _, run_id in claims]),
    )
    taken = {row[0] for row in await cur.fetchall()}
    held: dict[str, int] = {}
    if len(taken) < len(keys):
        cur = await conn.execute(
            "SELECT key, run_id FROM bridge_dedupe WHERE key = ANY(%s)", ([key for key in keys if key not in taken],)
        )
        held = {row[0]: int(row[1]) for row in await cur.fetchall()}
    return [None if key in taken else held.get(key) for key in keys]


async def release_dedupe(conn: Conn, key: str, run_id: int) -> None:
    await conn.execute("DELETE FROM bridge_dedupe WHERE key = %s AND run_id = %s", (key, run_id))


async def forget_expired(conn: Conn) -> int:
    cur = await conn.execute("DELETE FROM bridge_dedupe WHERE expires_at < now()")
    return cur.rowcount
