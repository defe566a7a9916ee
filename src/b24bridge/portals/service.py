"""The portal registry: who installed b24bridge, with which tokens, and connections that keep those tokens fresh.

Installation arrives three ways (REFERENCE 4.1, 4.3): the ONAPPINSTALL event (API-only apps), the install page in the
portal's frame, and the OAuth authorization-code flow. The first two are POSTs anyone could forge, so their refresh
token is exchanged once at the configured OAuth server before anything is stored: only the OAuth server can say
which portal (``member_id``) and endpoint the tokens really belong to, and only for our client_id/secret.
"""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

from b24bridge import bitrix
from b24bridge.bitrix import errors
from b24bridge.bitrix.auth import OAuthAuth, TokenPair
from b24bridge.bitrix.portal import Portal
from b24bridge.context import current
from b24bridge.observability import get_logger

from . import crypto, repository
from .schemas import InstallClaim, InstallError, check_domain, event_claim, frame_claim

log = get_logger(__name__)

APP_TOKEN_PURPOSE = "application_token"

# Called with the member_id after every (re)installation, in the background: the robots registry appends its sync.
on_installed: list[Callable[[str], Awaitable[None]]] = []


@dataclass
class PortalRecord:
    member_id: str
    domain: str
    client_endpoint: str
    status: str
    scope: str
    limits: bitrix.Limits
    app_version: int | None


class PortalUnavailableError(errors.AuthLostError):
    """The portal is uninstalled or lost its authorisation: no calls until it is installed or authorised again."""


def _record(row: repository.PortalRow) -> PortalRecord:
    limits = bitrix.Limits(burst=row.burst, drain=row.drain, operating_limit=row.operating_limit)
    return PortalRecord(row.member_id, row.domain, row.client_endpoint, row.status, row.scope, limits, row.app_version)


def _keys() -> crypto.Keyring:
    return crypto.keyring(current().settings)


def _ts(epoch: float | None) -> datetime | None:
    return datetime.fromtimestamp(epoch, UTC) if epoch is not None else None


# --- the registry -----------------------------------------------------------------------------------------------


async def get_portal(member_id: str) -> PortalRecord | None:
    async with current().database.pool.connection() as conn:
        row = await repository.get(conn, member_id)
    return _record(row) if row else None


async def list_portals(status: str | None = None) -> list[PortalRecord]:
    async with current().database.pool.connection() as conn:
        return [_record(row) for row in await repository.list_all(conn, status)]


def _token_matches(row: repository.PortalRow | None, application_token: str) -> bool:
    keys = _keys()
    stored = row.application_token_hash if row else None
    # Compare even when nothing is stored, so "no such portal" and "wrong token" take the same time.
    matched = keys.check_mac(APP_TOKEN_PURPOSE, application_token, stored or "-:" + "0" * 64)
    return matched and stored is not None and bool(application_token)


async def verify_application_token(member_id: str, application_token: str) -> PortalRecord | None:
    """The active portal ``member_id`` if ``application_token`` is the one it gave us (constant-time), else None."""
    async with current().database.pool.connection() as conn:
        row = await repository.get(conn, member_id)
    if not _token_matches(row, application_token) or row is None or row.status != "active":
        return None
    return _record(row)


# --- connections ------------------------------------------------------------------------------------------------

# Per process and per Bitrix client (a test may run several service contexts), one connection per portal.
_connections: weakref.WeakKeyDictionary[bitrix.BitrixClient, dict[str, Portal]] = weakref.WeakKeyDictionary()


class _RegistryPortal(Portal):
    """A portal connection that records a lost authorisation in the registry the moment the client sees it."""

    async def refresh(self, stale_access_token: str) -> None:
        try:
            await super().refresh(stale_access_token)
        except errors.AuthLostError as exc:
            await mark_auth_lost(self.key, exc.code or "refresh refused")
            raise


def _pair(row: repository.PortalRow) -> TokenPair | None:
    if not row.access_token_enc or not row.refresh_token_enc:
        return None
    keys = _keys()
    return TokenPair(
        access_token=keys.decrypt(row.access_token_enc, f"{row.member_id}:access"),
        refresh_token=keys.decrypt(row.refresh_token_enc, f"{row.member_id}:refresh"),
        expires_at=row.token_expires_at.timestamp() if row.token_expires_at else None,
        client_endpoint=row.client_endpoint,
        member_id=row.member_id,
        scope=row.scope,
    )


def _unavailable(member_id: str, status: str) -> PortalUnavailableError:
    what = {"uninstalled": "is uninstalled", "auth_lost": "lost its authorisation (reinstall or re-authorise)"}
    return PortalUnavailableError(f"portal {member_id} {what.get(status, status)}", portal=member_id)


async def connect(member_id: str) -> Portal:
    """A client connection to an active portal; refreshed tokens are saved encrypted before they are used."""
    context = current()
    async with context.database.pool.connection() as conn:
        row = await repository.get(conn, member_id)
    if row is None:
        raise PortalUnavailableError(f"portal {member_id} is not installed", portal=member_id)
    if row.status != "active":
        raise _unavailable(member_id, row.status)
    cache = _connections.setdefault(context.bitrix, {})
    portal = cache.get(member_id)
    if portal is not None and portal.auth_lost is None:
        return portal
    tokens = _pair(row)
    if tokens is None:
        raise _unavailable(member_id, "uninstalled")
    settings = context.settings
    if not settings.app_client_id or settings.app_client_secret is None:
        raise errors.ConfigurationError("B24BRIDGE_APP_CLIENT_ID and B24BRIDGE_APP_CLIENT_SECRET are not set")
    auth = OAuthAuth(
        settings.app_client_id,
        settings.app_client_secret.get_secret_value(),
        tokens,
        row.client_endpoint,
        settings.oauth_server,
    )

    async def save(pair: TokenPair) -> None:
        await _save_tokens(member_id, pair)

    async def load() -> TokenPair | None:
        async with current().database.pool.connection() as conn:
            stored = await repository.get(conn, member_id)
        return _pair(stored) if stored else None

    async def moved(netloc: str) -> None:
        await _domain_changed(member_id, netloc, auth.client_endpoint)

    portal = _RegistryPortal(
        context.bitrix,
        auth,
        key=member_id,
        limits=_record(row).limits,
        on_tokens=save,
        load_tokens=load,
        on_domain_change=moved,
    )
    cache[member_id] = portal
    return portal


async def _save_tokens(member_id: str, pair: TokenPair) -> None:
    keys = _keys()
    async with current().database.pool.connection() as conn, conn.transaction():
        saved = await repository.save_tokens(
            conn,
            member_id,
            keys.encrypt(pair.access_token, f"{member_id}:access"),
            keys.encrypt(pair.refresh_token, f"{member_id}:refresh"),
            _ts(pair.expires_at),
            pair.client_endpoint,
        )
        if saved:
            await repository.add_event(conn, member_id, "tokens_refreshed", {"expires_at": pair.expires_at})
    if not saved:
        raise _unavailable(member_id, "uninstalled")


async def _domain_changed(member_id: str, netloc: str, client_endpoint: str) -> None:
    async with current().database.pool.connection() as conn, conn.transaction():
        await repository.set_domain(conn, member_id, netloc, client_endpoint)
        await repository.add_event(conn, member_id, "domain_changed", {"domain": netloc})
    log.info("portal domain changed", member_id=member_id, domain=netloc)


async def mark_auth_lost(member_id: str, reason: str) -> None:
    """The refresh token was refused: stop using the portal until it is installed or authorised again."""
    async with current().database.pool.connection() as conn, conn.transaction():
        changed = await repository.mark_auth_lost(conn, member_id)
        if changed:
            await repository.add_event(conn, member_id, "auth_lost", {"reason": reason})
    if changed:
        log.warning("portal authorisation lost", member_id=member_id, reason=reason)


def _forget_connection(member_id: str) -> None:
    for cache in _connections.values():
        cache.pop(member_id, None)


# --- installation -----------------------------------------------------------------------------------------------


async def _oauth_token(params: dict[str, str]) -> dict[str, Any]:
    """One request to the OAuth server (REFERENCE 4.1, 4.2); errors carry the server's code, never our secrets."""
    settings = current().settings
    if not settings.app_client_id or settings.app_client_secret is None:
        raise InstallError("b24bridge has no application credentials (B24BRIDGE_APP_CLIENT_ID/SECRET)", 503)
    query = {"client_id": settings.app_client_id, "client_secret": settings.app_client_secret.get_secret_value()}
    url = f"{settings.oauth_server.rstrip('/')}/oauth/token/"
    try:
        response = await current().bitrix.http.get(url, params={**params, **query})
        body = response.json()
    except Exception as exc:  # unreachable, or not JSON: both mean no answer we can use
        raise InstallError(f"OAuth server gave no usable answer ({type(exc).__name__})", 503) from None
    if response.status_code != 200 or not isinstance(body, dict) or "access_token" not in body:
        code = body.get("error") if isinstance(body, dict) else None
        raise InstallError(f"the OAuth server refused the authorisation ({code or response.status_code})", 401)
    return body


async def _confirm(claim: InstallClaim) -> TokenPair:
    """Exchange the claimed refresh token: proves the tokens are ours and says which portal they belong to."""
    pair = TokenPair.from_answer(
        await _oauth_token({"grant_type": "refresh_token", "refresh_token": claim.refresh_token})
    )
    if pair.member_id and pair.member_id != claim.member_id:
        raise InstallError("the tokens belong to another portal than member_id says", 401)
    return pair


async def _store(claim: InstallClaim, pair: TokenPair) -> PortalRecord:
    keys = _keys()
    member_id = claim.member_id
    endpoint = pair.client_endpoint or claim.client_endpoint or f"https://{claim.domain}/rest/"
    try:
        bitrix.auth.check_url(endpoint, "client endpoint")
    except errors.ConfigurationError as exc:
        raise InstallError(str(exc)) from None
    values = repository.InstallValues(
        member_id=member_id,
        domain=urlsplit(endpoint).netloc or claim.domain,
        client_endpoint=endpoint,
        server_endpoint=claim.server_endpoint,
        scope=pair.scope or claim.scope,
        access_token_enc=keys.encrypt(pair.access_token, f"{member_id}:access"),
        refresh_token_enc=keys.encrypt(pair.refresh_token, f"{member_id}:refresh"),
        token_expires_at=_ts(pair.expires_at),
        application_token_hash=keys.mac(APP_TOKEN_PURPOSE, claim.application_token)
        if claim.application_token
        else None,
        app_version=claim.app_version,
    )
    async with current().database.pool.connection() as conn, conn.transaction():
        before = await repository.get(conn, member_id, lock=True)
        await repository.upsert_install(conn, values)
        kind = "installed" if before is None else "reinstalled"
        detail = {"via": claim.via, "domain": values.domain, "app_version": claim.app_version}
        await repository.add_event(conn, member_id, kind, detail)
        row = await repository.get(conn, member_id)
    assert row is not None
    for cache in _connections.values():  # a live connection continues with the new pair, auth-lost state cleared
        if member_id in cache:
            cache[member_id].set_tokens(pair)
    log.info("portal " + kind, member_id=member_id, domain=values.domain, via=claim.via)
    _run_hooks(member_id)
    return _record(row)


async def install_from_event(form: Mapping[str, str]) -> PortalRecord:
    """ONAPPINSTALL posted to the install handler (form with PHP brackets)."""
    claim = event_claim(form)
    return await _store(claim, await _confirm(claim))


async def install_from_frame(form: Mapping[str, str], query: Mapping[str, str]) -> PortalRecord:
    """The install page POSTed into the portal's frame (AUTH_ID, REFRESH_ID, APPLICATION_TOKEN, ...)."""
    claim = frame_claim(form, query)
    return await _store(claim, await _confirm(claim))


async def install_from_oauth(
    code: str, domain: str, member_id: str, scope: str | None = None, server_domain: str | None = None
) -> PortalRecord:
    """Authorization-code flow: the code is exchanged at the OAuth server, whose answer is authoritative.

    The code flow does not carry the ``application_token``: a stored one is kept; a new portal gets it with the
    ONAPPINSTALL event or the frame POST (REFERENCE 4.4). Until then its events and robot calls are refused.
    """
    del server_domain  # tokens are always exchanged at the configured OAuth server, never one named by the caller
    if not code or not member_id:
        raise InstallError("code and member_id are required")
    pair = TokenPair.from_answer(await _oauth_token({"grant_type": "authorization_code", "code": code}))
    if pair.member_id and pair.member_id != member_id:
        raise InstallError("the authorisation belongs to another portal than member_id says", 401)
    claim = InstallClaim(
        via="oauth",
        member_id=member_id,
        domain=check_domain(domain),
        scope=pair.scope or scope or "",
        access_token=pair.access_token,
        refresh_token=pair.refresh_token,
        server_endpoint=pair.raw.get("server_endpoint"),
    )
    return await _store(claim, pair)


async def uninstall(form: Mapping[str, str]) -> bool:
    """ONAPPUNINSTALL: accepted only with the portal's application_token; tokens wiped, history kept."""
    member_id = str(form.get("auth[member_id]") or "")
    async with current().database.pool.connection() as conn, conn.transaction():
        row = await repository.get(conn, member_id, lock=True)
        if not _token_matches(row, str(form.get("auth[application_token]") or "")) or row is None:
            return False
        await repository.mark_uninstalled(conn, member_id)
        clean = form.get("data[CLEAN]") in ("1", "Y")
        await repository.add_event(conn, member_id, "uninstalled", {"clean": clean, "domain": row.domain})
    _forget_connection(member_id)
    log.info("portal uninstalled", member_id=member_id, domain=row.domain)
    return True


# --- after installation -----------------------------------------------------------------------------------------

_background: set[asyncio.Task[None]] = set()


def _run_hooks(member_id: str) -> None:
    # In the background so the portal gets its answer at once; a lost task (process died) is repaired by
    # ``b24bridge robots sync``, and the uninstall binding by the next install.
    task = asyncio.get_running_loop().create_task(_after_install(member_id))
    _background.add(task)
    task.add_done_callback(_background.discard)


async def _after_install(member_id: str) -> None:
    for hook in [_bind_uninstall, *on_installed]:
        try:
            await hook(member_id)
        except Exception as exc:
            log.error(
                "post-install step failed", member_id=member_id, step=getattr(hook, "__name__", "?"), error=str(exc)
            )


async def _bind_uninstall(member_id: str) -> None:
    """ONAPPUNINSTALL is delivered only to a bound handler (REFERENCE 4.3); bindings vanish on every update."""
    public_url = current().settings.public_url
    if not public_url:
        log.warning("B24BRIDGE_PUBLIC_URL is not set: uninstalls will not be reported", member_id=member_id)
        return
    portal = await connect(member_id)
    handler = f"{public_url.rstrip('/')}/events"
    try:
        await portal.call("event.bind", {"event": "ONAPPUNINSTALL", "handler": handler})
    except errors.APIError as exc:
        if "already" not in str(exc).lower():  # a binding that exists is what we wanted
            raise
