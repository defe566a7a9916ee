"""Which portals may call us, held in memory: no database round trip to check a robot call's or an event's origin.

Every portal's application-token MAC and status are loaded once and kept current by PostgreSQL notifications: the
``portals`` table notifies ``b24bridge_portals`` with the member_id on every change (migration 0008), and each
process's listener reloads that one row. An install, an update or an uninstall in any process is therefore known to
every other within milliseconds of its commit.

While the listener is not connected (the database restarted, a network fault) the memory may be behind: for at most
``STALE_AFTER`` seconds it still answers; after that every check asks the database, as before, and when the database
cannot answer either, a check says it cannot tell (:data:`UNKNOWN`): the door then keeps the call in the spool (sealed,
with the token it carried), to be checked when the database is back. The check is constant-time whichever way it goes: a
MAC is computed and compared whether the portal is known or not.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Any, Final

import psycopg
from psycopg_pool import AsyncConnectionPool

from b24bridge.db import DATABASE_AWAY
from b24bridge.observability import get_logger

from . import crypto, repository
from .schemas import PortalRecord

log = get_logger(__name__)

CHANNEL = "b24bridge_portals"
APP_TOKEN_PURPOSE = "application_token"
STALE_AFTER = 1.0
RECONNECT_EVERY = 1.0
# The listener asks its connection to answer this often, so a connection that died silently is noticed.
HEARTBEAT = 5.0
_NO_MAC = "-:" + "0" * 64


class _Unknown:
    def __repr__(self) -> str:
        return "UNKNOWN"


UNKNOWN: Final = _Unknown()
"""A check that could not be made (the database is away and this process has not seen the portal)."""


@dataclass(frozen=True)
class _Entry:
    mac: str | None
    record: PortalRecord


def _entry(row: repository.PortalRow) -> _Entry:
    from .service import record_of

    return _Entry(row.application_token_hash, record_of(row))


class PortalDirectory:
    def __init__(self, url: str, pool: AsyncConnectionPool, keys: crypto.Keyring) -> None:
        self.url = url
        self.pool = pool
        self.keys = keys
        self._entries: dict[str, _Entry] = {}
        self._connected = False
        self._lost_at: float | None = 0.0  # monotonic time the listener was last known connected; None: connected
        self._loaded = False
        self.listening = asyncio.Event()  # set while the listener is connected and the memory loaded

    # --- the check --------------------------------------------------------------------------------------------------

    async def check(self, member_id: str, application_token: str) -> PortalRecord | _Unknown | None:
        """The active portal ``member_id`` if ``application_token`` is its own; None if not; :data:`UNKNOWN` if
        neither memory nor the database can tell now."""
        if self._current():
            return self._verdict(self._entries.get(member_id), application_token)
        try:
            async with self.pool.connection(timeout=1.0) as conn:
                row = await repository.get_for_check(conn, member_id)
        except DATABASE_AWAY:
            known = self._verdict(self._entries.get(member_id), application_token)
            # The last word heard is that it may: it may. Otherwise it may have been installed since.
            return known if known is not None else UNKNOWN
        if row is not None:
            self._entries[member_id] = _entry(row)
        return self._verdict(_entry(row) if row is not None else None, application_token)

    async def find(self, name: str) -> PortalRecord | None:
        """An installed portal by member_id or domain (how a route file names it), from memory while it is current;
        otherwise from the database, and from what memory last heard while the database is away."""
        if not self._current():
            try:
                async with self.pool.connection(timeout=1.0) as conn:
                    rows = await repository.list_all(conn)
                self._entries.update((row.member_id, _entry(row)) for row in rows)
            except DATABASE_AWAY:
                pass
        entry = self._entries.get(name)
        if entry is not None:
            return entry.record
        domain = name.strip().lower()
        for candidate in self._entries.values():
            if candidate.record.domain.lower() == domain:
                return candidate.record
        return None

    def _verdict(self, entry: _Entry | None, application_token: str) -> PortalRecord | None:
        stored = entry.mac if entry is not None else None
        matched = self.keys.check_mac(APP_TOKEN_PURPOSE, application_token, stored or _NO_MAC)
        if not matched or entry is None or stored is None or not application_token:
            return None
        return entry.record if entry.record.status == "active" else None

    def _current(self) -> bool:
        if not self._loaded:
            return False
        return self._lost_at is None or time.monotonic() - self._lost_at < STALE_AFTER

    def heard(self, row: repository.PortalRow) -> None:
        """An installation this process has just committed: known here at once, not when its notification comes
        back (the portal may call the moment it has its answer)."""
        self._entries[row.member_id] = _entry(row)

    def forget(self, member_id: str) -> None:
        """An uninstall this process has just accepted (perhaps into the spool): refuse the portal from now on."""
        entry = self._entries.get(member_id)
        if entry is not None:
            self._entries[member_id] = _Entry(None, entry.record)

    # --- keeping current ----------------------------------------------------------------------------------------------

    async def run(self) -> None:
        """Listen for changes until cancelled, reconnecting (and reloading everything) after every loss."""
        while True:
            try:
                async with await psycopg.AsyncConnection.connect(self.url, autocommit=True, connect_timeout=5) as conn:
                    await conn.execute(f"LISTEN {CHANNEL}")
                    await self._load_all(conn)
                    self._lost_at, self._loaded = None, True
                    self.listening.set()
                    await self._listen(conn)
            except asyncio.CancelledError:
                self.listening.clear()
                raise
            except DATABASE_AWAY as exc:
                self.listening.clear()
                if self._lost_at is None:
                    self._lost_at = time.monotonic()
                    log.warning("portal directory: listener lost; checks ask the database", error=type(exc).__name__)
            except Exception:
                self.listening.clear()
                if self._lost_at is None:
                    self._lost_at = time.monotonic()
                log.exception("portal directory: listener failed")
            await asyncio.sleep(RECONNECT_EVERY)

    async def _listen(self, conn: psycopg.AsyncConnection[Any]) -> None:
        while True:
            changed = [notify.payload async for notify in conn.notifies(timeout=HEARTBEAT, stop_after=1)]
            for member_id in changed:
                row = await repository.get(conn, member_id)
                if row is None:
                    self._entries.pop(member_id, None)
                else:
                    self._entries[member_id] = _entry(row)
            if not changed:
                await conn.execute("SELECT 1")  # a connection that died silently raises here

    async def _load_all(self, conn: psycopg.AsyncConnection[Any]) -> None:
        rows = await repository.list_all(conn)
        self._entries = {row.member_id: _entry(row) for row in rows}
