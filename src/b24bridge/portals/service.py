"""The portal registry: who installed b24bridge, with which tokens, and connections that keep those tokens fresh.

Installation itself (three ways in, and uninstallation) is :mod:`.install`; this module answers "which portals are
there" and "give me a working connection to this one".
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from psycopg_pool import AsyncConnectionPool

from b24bridge.bitrix import BitrixClient, Limits, OAuthAuth, Portal, TokenPair
from b24bridge.bitrix.errors import AuthLostError, ConfigurationError
from b24bridge.observability import get_logger

from . import crypto, repository
from .schemas import AppCredentials, PortalRecord, PortalStanding, PortalUnavailableError

log = get_logger(__name__)

APP_TOKEN_PURPOSE = "application_token"
# What a MAC is compared against when no portal row exists, so both answers cost the same.
_NO_MAC = "-:" + "0" * 64


def record_of(row: repository.PortalRow) -> PortalRecord:
    limits = Limits(burst=row.burst, drain=row.drain, operating_limit=row.operating_limit)
    return PortalRecord(row.member_id, row.domain, row.client_endpoint, row.status, row.scope, limits, row.app_version)


def standing_of(row: repository.PortalRow) -> PortalStanding:
    has_tokens = bool(row.access_token_enc and row.refresh_token_enc)
    return PortalStanding(
        record_of(row), has_tokens, row.token_expires_at, row.installed_at, row.updated_at, row.uninstalled_at
    )


def timestamp(epoch: float | None) -> datetime | None:
    return datetime.fromtimestamp(epoch, UTC) if epoch is not None else None


def unavailable(member_id: str, status: str) -> PortalUnavailableError:
    what = {
        "missing": "is not installed",
        "uninstalled": "is uninstalled",
        "auth_lost": "lost its authorisation (reinstall or re-authorise)",
    }
    return PortalUnavailableError(f"portal {member_id} {what.get(status, status)}", portal=member_id)


class PortalRegistry:
    """Portals from the database, and one live client connection per portal in this process."""

    def __init__(
        self, pool: AsyncConnectionPool, keys: crypto.Keyring, bitrix: BitrixClient, app: AppCredentials | None
    ) -> None:
        self.pool = pool
        self.keys = keys
        self.bitrix = bitrix
        self.app = app
        self._connections: dict[str, Portal] = {}

    # --- queries ----------------------------------------------------------------------------------------------

    async def get(self, member_id: str) -> PortalRecord | None:
        async with self.pool.connection() as conn:
            row = await repository.get(conn, member_id)
        return record_of(row) if row else None

    async def list_portals(self, status: str | None = None) -> list[PortalRecord]:
        async with self.pool.connection() as conn:
            return [record_of(row) for row in await repository.list_all(conn, status)]

    async def standings(self) -> list[PortalStanding]:
        """Every portal with its token standing (present, expiry) and dates, for operators."""
        async with self.pool.connection() as conn:
            rows = await repository.list_all(conn)
        return [standing_of(row) for row in rows]

    async def history(self, member_id: str, limit: int = 20) -> list[dict[str, Any]]:
        """The portal's latest events (installed, tokens refreshed, uninstalled...), newest first."""
        async with self.pool.connection() as conn:
            return await repository.events(conn, member_id, limit)

    async def find(self, name: str) -> PortalRecord | None:
        """An installed portal by member_id or domain (how a route file names it)."""
        record = await self.get(name)
        if record is not None:
            return record
        domain = name.strip().lower()
        for candidate in await self.list_portals():
            if candidate.domain.lower() == domain:
                return candidate
        return None

    def token_matches(self, row: repository.PortalRow | None, application_token: str) -> bool:
        """Constant-time: "no such portal" and "wrong token" do the same work."""
        stored = row.application_token_hash if row else None
        matched = self.keys.check_mac(APP_TOKEN_PURPOSE, application_token, stored or _NO_MAC)
        return matched and stored is not None and bool(application_token)

    async def verify_application_token(self, member_id: str, application_token: str) -> PortalRecord | None:
        """The active portal ``member_id`` if ``application_token`` is the one it gave us, else None; the same work
        whether the portal exists or not."""
        async with self.pool.connection() as conn:
            row = await repository.get_for_check(conn, member_id)
        if not self.token_matches(row, application_token) or row is None or row.status != "active":
            return None
        return record_of(row)

    # --- connections --------------------------------------------------------------------------------------------

    async def connect(self, member_id: str) -> Portal:
        """A client connection to an active portal; refreshed tokens are saved encrypted before they are used.

        A live connection is reused without reading the portal row again: an uninstall in this process forgets
        it, and one seen elsewhere makes the portal refuse the revoked tokens.
        """
        cached = self._connections.get(member_id)
        if cached is not None and cached.auth_lost is None:
            return cached
        async with self.pool.connection() as conn:
            row = await repository.get(conn, member_id)
        if row is None:
            raise unavailable(member_id, "missing")
        if row.status != "active":
            raise unavailable(member_id, row.status)
        tokens = self._decrypt(row)
        if tokens is None:
            raise unavailable(member_id, "uninstalled")
        if self.app is None:
            raise ConfigurationError("B24BRIDGE_APP_CLIENT_ID and B24BRIDGE_APP_CLIENT_SECRET are not set")
        auth = OAuthAuth(self.app.client_id, self.app.client_secret, tokens, row.client_endpoint, self.app.oauth_server)

        async def save(pair: TokenPair) -> None:
            await self._save_tokens(member_id, pair)

        async def load() -> TokenPair | None:
            async with self.pool.connection() as conn:
                stored = await repository.get(conn, member_id)
            return self._decrypt(stored) if stored else None

        async def moved(netloc: str) -> None:
            await self._domain_changed(member_id, netloc, auth.client_endpoint)

        async def lost(exc: AuthLostError) -> None:
            await self.mark_auth_lost(member_id, exc.code or "refresh refused")

        portal = self.bitrix.portal(
            auth,
            key=member_id,
            limits=record_of(row).limits,
            on_tokens=save,
            load_tokens=load,
            on_domain_change=moved,
            on_auth_lost=lost,
        )
        self._connections[member_id] = portal
        return portal

    def adopt_tokens(self, member_id: str, pair: TokenPair) -> None:
        """A re-installation brought new tokens: a live connection continues with them, its lost state cleared."""
        portal = self._connections.get(member_id)
        if portal is not None:
            portal.set_tokens(pair)

    def forget(self, member_id: str) -> None:
        self._connections.pop(member_id, None)

    async def mark_auth_lost(self, member_id: str, reason: str) -> None:
        """The refresh token was refused: stop using the portal until it is installed or authorised again."""
        async with self.pool.connection() as conn, conn.transaction():
            changed = await repository.mark_auth_lost(conn, member_id)
            if changed:
                await repository.add_event(conn, member_id, "auth_lost", {"reason": reason})
        if changed:
            log.warning("portal authorisation lost", member_id=member_id, reason=reason)

    def _decrypt(self, row: repository.PortalRow) -> TokenPair | None:
        if not row.access_token_enc or not row.refresh_token_enc:
            return None
        return TokenPair(
            access_token=self.keys.decrypt(row.access_token_enc, f"{row.member_id}:access"),
            refresh_token=self.keys.decrypt(row.refresh_token_enc, f"{row.member_id}:refresh"),
            expires_at=row.token_expires_at.timestamp() if row.token_expires_at else None,
            client_endpoint=row.client_endpoint,
            member_id=row.member_id,
            scope=row.scope,
        )

    async def _save_tokens(self, member_id: str, pair: TokenPair) -> None:
        async with self.pool.connection() as conn, conn.transaction():
            saved = await repository.save_tokens(
                conn,
                member_id,
                self.keys.encrypt(pair.access_token, f"{member_id}:access"),
                self.keys.encrypt(pair.refresh_token, f"{member_id}:refresh"),
                timestamp(pair.expires_at),
                pair.client_endpoint,
            )
            if saved:
                await repository.add_event(conn, member_id, "tokens_refreshed", {"expires_at": pair.expires_at})
        if not saved:
            raise unavailable(member_id, "uninstalled")

    async def _domain_changed(self, member_id: str, netloc: str, client_endpoint: str) -> None:
        async with self.pool.connection() as conn, conn.transaction():
            await repository.set_domain(conn, member_id, netloc, client_endpoint)
            await repository.add_event(conn, member_id, "domain_changed", {"domain": netloc})
        log.info("portal domain changed", member_id=member_id, domain=netloc)
