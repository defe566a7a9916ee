"""Installation and uninstallation of b24bridge in a portal.

Installation arrives three ways (REFERENCE 4.1, 4.3): the ONAPPINSTALL event (API-only apps), the install page in the
portal's frame, and the OAuth authorization-code flow. The first two are POSTs anyone could forge, so their refresh
token is exchanged once at the configured OAuth server before anything is stored: only the OAuth server can say
which portal (``member_id``) and endpoint the tokens really belong to, and only for our client_id/secret.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any
from urllib.parse import urlsplit

import httpx
from psycopg_pool import AsyncConnectionPool

from b24bridge import forms
from b24bridge.bitrix import Limits, TokenPair
from b24bridge.bitrix import errors as bitrix_errors
from b24bridge.bitrix.auth import check_url
from b24bridge.bitrix.refresh import request_tokens
from b24bridge.db import DATABASE_AWAY
from b24bridge.observability import get_logger

from . import crypto, repository
from .directory import PortalDirectory
from .guard import InstallGuard
from .schemas import (
    AppCredentials,
    InstallClaim,
    InstallError,
    PortalRecord,
    check_domain,
    event_claim,
    frame_claim,
    portal_auth,
)
from .service import APP_TOKEN_PURPOSE, PortalRegistry, record_of, timestamp

log = get_logger(__name__)

# Called with the member_id after every (re)installation, in the background (e.g. "register the robots").
InstallHook = Callable[[str], Awaitable[None]]
# Keeps a record (its kind and payload) in the local spool while the database is away; raises if it cannot.
Keep = Callable[[str, dict[str, Any]], Awaitable[None]]
INSTALL_RECORD = "portal.install"
UNINSTALL_RECORD = "portal.uninstall"


class Installer:
    def __init__(
        self,
        pool: AsyncConnectionPool,
        keys: crypto.Keyring,
        registry: PortalRegistry,
        http: httpx.AsyncClient,
        app: AppCredentials | None,
        public_url: str | None,
        after_install: Sequence[InstallHook] = (),
        guard: InstallGuard | None = None,
        directory: PortalDirectory | None = None,
        keep: Keep | None = None,
    ) -> None:
        self.pool = pool
        self.directory = directory
        # Without a spool (the CLI), an install or uninstall that cannot reach the database fails as it did.
        self.keep = keep
        self.keys = keys
        self.registry = registry
        self.http = http
        self.app = app
        self.public_url = public_url
        self.after_install = list(after_install)
        self.guard = guard
        self._background: set[asyncio.Task[None]] = set()

    # --- the three ways in --------------------------------------------------------------------------------------

    async def from_event(self, form: Mapping[str, Any], client: str | None = None) -> PortalRecord:
        """ONAPPINSTALL posted to the install handler (the parsed form); ``client`` is the sender's address."""
        claim = event_claim(form)
        return await self._store(claim, await self._confirm(claim, client))

    async def from_frame(
        self, form: Mapping[str, Any], query: Mapping[str, Any], client: str | None = None
    ) -> PortalRecord:
        """The install page POSTed into the portal's frame (AUTH_ID, REFRESH_ID, APPLICATION_TOKEN, ...)."""
        claim = frame_claim(form, query)
        return await self._store(claim, await self._confirm(claim, client))

    async def from_oauth(
        self, code: str, domain: str, member_id: str, scope: str | None = None, client: str | None = None
    ) -> PortalRecord:
        """Authorization-code flow: the code is exchanged at the OAuth server, whose answer is authoritative.

        The code flow does not carry the ``application_token``: a stored one is kept; a new portal gets it with the
        ONAPPINSTALL event or the frame POST (REFERENCE 4.4). Until then its events and robot calls are refused.
        Tokens are always exchanged at the configured OAuth server, never one named by the caller.
        """
        if not code or not member_id:
            raise InstallError("code and member_id are required")
        pair = await self._grant({"grant_type": "authorization_code", "code": code}, member_id, code, client)
        if pair.member_id and pair.member_id != member_id:
            raise InstallError("the authorisation belongs to another portal than member_id says", 401)
        claim = InstallClaim(
            via="oauth",
            member_id=member_id,
            domain=check_domain(domain),
            scope=pair.scope or scope or "",
            refresh_token=pair.refresh_token,
            server_endpoint=pair.raw.get("server_endpoint"),
        )
        return await self._store(claim, pair)

    async def uninstall(self, form: Mapping[str, Any]) -> bool:
        """ONAPPUNINSTALL: accepted only with the portal's application_token; tokens wiped, history kept.

        A wrong token is refused before any row lock, by the same query and MAC check whether the member_id is
        known or not, so the answer's timing does not tell whether a portal is installed.
        """
        member_id, token = portal_auth(form)
        clean = forms.optional_text(form, "data", "CLEAN") in ("1", "Y")
        verdict = (
            await self.directory.check(member_id or "", token or "")
            if self.directory is not None
            else await self.registry.verify_application_token(member_id or "", token or "")
        )
        if verdict is None or member_id is None or token is None:
            return False
        try:
            return await self._uninstall(member_id, token, clean)
        except DATABASE_AWAY:
            if self.keep is None:
                raise
        # The database is away: the uninstall waits in the spool, and this process refuses the portal from now on.
        await self.keep(UNINSTALL_RECORD, {"member_id": member_id, "application_token": token, "clean": clean})
        if self.directory is not None:
            self.directory.forget(member_id)
        self.registry.forget(member_id)
        log.info("portal uninstall kept until the database is back", member_id=member_id)
        return True

    async def apply_kept_uninstall(self, record: dict[str, Any]) -> None:
        """A spooled uninstall, now that the database is back (the token checked again, under the row's lock)."""
        await self._uninstall(str(record["member_id"]), str(record["application_token"]), bool(record["clean"]))

    async def apply_kept_install(self, record: dict[str, Any]) -> None:
        """A spooled installation (its tokens confirmed by the OAuth server when it came), now stored."""
        claim = InstallClaim.model_validate(record["claim"])
        pair = TokenPair(**record["pair"])
        await self._store(claim, pair)

    async def _uninstall(self, member_id: str, token: str, clean: bool) -> bool:
        async with self.pool.connection() as conn, conn.transaction():
            row = await repository.get(conn, member_id, lock=True)
            # Checked again under the lock: a reinstallation in between brings another token.
            if row is None or not self.registry.token_matches(row, token):
                return False
            await repository.mark_uninstalled(conn, member_id)
            await repository.add_event(conn, member_id, "uninstalled", {"clean": clean, "domain": row.domain})
        if self.directory is not None:
            self.directory.forget(member_id)
        self.registry.forget(member_id)
        log.info("portal uninstalled", member_id=member_id, domain=row.domain)
        return True

    # --- confirming and storing ---------------------------------------------------------------------------------

    async def _grant(self, params: dict[str, str], member_id: str, secret: str, client: str | None) -> TokenPair:
        """One grant at the OAuth server, within the guard's allowance; errors carry the server's code, never our
        secrets. ``secret`` is what the caller handed us to prove itself (the refresh token or the code)."""
        if self.app is None:
            raise InstallError("b24bridge has no application credentials (B24BRIDGE_APP_CLIENT_ID/SECRET)", 503)
        attempt = self.guard.admit(client, member_id, secret) if self.guard else None
        query = {**params, "client_id": self.app.client_id, "client_secret": self.app.client_secret}
        try:
            pair = await request_tokens(self.http, self.app.token_url, query, member_id)
        except bitrix_errors.AuthLostError as exc:
            if self.guard and attempt:
                self.guard.refused(attempt)
            reason = exc.code or exc.status
            raise InstallError(f"the OAuth server refused the authorisation ({reason})", 401) from None
        except bitrix_errors.BitrixError as exc:
            raise InstallError(f"OAuth server gave no usable answer ({exc.args[0]})", 503) from None
        if self.guard and attempt:
            self.guard.confirmed(attempt)
        return pair

    async def _confirm(self, claim: InstallClaim, client: str | None) -> TokenPair:
        """Exchange the claimed refresh token: proves the tokens are ours and says which portal they belong to."""
        params = {"grant_type": "refresh_token", "refresh_token": claim.refresh_token}
        pair = await self._grant(params, claim.member_id, claim.refresh_token, client)
        if pair.member_id and pair.member_id != claim.member_id:
            raise InstallError("the tokens belong to another portal than member_id says", 401)
        return pair

    async def _store(self, claim: InstallClaim, pair: TokenPair) -> PortalRecord:
        member_id = claim.member_id
        endpoint = pair.client_endpoint or claim.client_endpoint or f"https://{claim.domain}/rest/"
        try:
            check_url(endpoint, "client endpoint")
        except bitrix_errors.ConfigurationError as exc:
            raise InstallError(str(exc)) from None
        keys = self.keys
        values = repository.InstallValues(
            member_id=member_id,
            domain=urlsplit(endpoint).netloc or claim.domain,
            client_endpoint=endpoint,
            server_endpoint=claim.server_endpoint,
            scope=pair.scope or claim.scope,
            access_token_enc=keys.encrypt(pair.access_token, f"{member_id}:access"),
            refresh_token_enc=keys.encrypt(pair.refresh_token, f"{member_id}:refresh"),
            token_expires_at=timestamp(pair.expires_at),
            application_token_hash=keys.mac(APP_TOKEN_PURPOSE, claim.application_token)
            if claim.application_token
            else None,
            app_version=claim.app_version,
        )
        try:
            async with self.pool.connection() as conn, conn.transaction():
                before = await repository.get(conn, member_id, lock=True)
                row = await repository.upsert_install(conn, values)
                kind = "installed" if before is None else "reinstalled"
                detail = {"via": claim.via, "domain": values.domain, "app_version": claim.app_version}
                await repository.add_event(conn, member_id, kind, detail)
        except DATABASE_AWAY:
            if self.keep is None:
                raise
            # Confirmed by the OAuth server, not yet stored: kept (sealed, tokens and all) until the database is back,
            # then stored as if it had just come, robots registered and events bound after.
            await self.keep(INSTALL_RECORD, {"claim": claim.model_dump(), "pair": dataclasses.asdict(pair)})
            log.info("portal installation kept until the database is back", member_id=member_id, via=claim.via)
            return PortalRecord(member_id, values.domain, endpoint, "active", values.scope, Limits(), claim.app_version)
        if self.directory is not None:
            self.directory.heard(row)
        self.registry.adopt_tokens(member_id, pair)
        log.info("portal " + kind, member_id=member_id, domain=values.domain, via=claim.via)
        self._after_install(member_id)
        return record_of(row)

    # --- after installation ---------------------------------------------------------------------------------------

    def _after_install(self, member_id: str) -> None:
        # In the background so the portal gets its answer at once; a lost task (process died) is repaired by
        # ``b24bridge robots sync``, and the uninstall binding by the next install.
        task = asyncio.get_running_loop().create_task(self._run_hooks(member_id))
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _run_hooks(self, member_id: str) -> None:
        for hook in [self._bind_uninstall, *self.after_install]:
            try:
                await hook(member_id)
            except Exception as exc:
                step = getattr(hook, "__name__", "?")
                log.error("post-install step failed", member_id=member_id, step=step, error=str(exc))

    async def _bind_uninstall(self, member_id: str) -> None:
        """ONAPPUNINSTALL is delivered only to a bound handler (REFERENCE 4.3); bindings vanish on every update."""
        if not self.public_url:
            log.warning("B24BRIDGE_PUBLIC_URL is not set: uninstalls will not be reported", member_id=member_id)
            return
        portal = await self.registry.connect(member_id)
        handler = f"{self.public_url.rstrip('/')}/events"
        try:
            await portal.call("event.bind", {"event": "ONAPPUNINSTALL", "handler": handler})
        except bitrix_errors.APIError as exc:
            if "already" not in str(exc).lower():  # a binding that exists is what we wanted
                raise

    async def wait_idle(self) -> None:
        """Let post-install steps in flight finish (shutdown, tests)."""
        if self._background:
            await asyncio.gather(*self._background, return_exceptions=True)
