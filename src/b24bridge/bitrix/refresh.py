"""The token refresh exchange with the Bitrix24 OAuth server (REFERENCE 4.2) and who keeps a connection's tokens."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import httpx
import structlog

from b24bridge.observability import portal_label

from . import errors, metrics
from .auth import Auth, OAuthAuth, RefreshLock, TokenLoader, TokenPair, TokenSaver

log = structlog.get_logger("b24bridge.bitrix")


async def request_tokens(http: httpx.AsyncClient, token_url: str, params: dict[str, str], portal: str) -> TokenPair:
    """One grant at the OAuth server (``refresh_token`` or ``authorization_code``, REFERENCE 4.1-4.2).

    Raises :class:`~.errors.AuthLostError` when the server refuses the grant (``invalid_grant``, ``invalid_client``:
    carrying its code, never the secrets sent) and :class:`~.errors.TokenRefreshError` when there is no usable answer.
    """
    try:
        response = await http.get(token_url, params=params)
    except httpx.HTTPError as exc:
        raise errors.TokenRefreshError(
            f"OAuth server unreachable: {type(exc).__name__}", method="oauth.token", portal=portal
        ) from None
    try:
        body = response.json()
    except ValueError:
        body = None
    if response.status_code == 200 and isinstance(body, dict) and "access_token" in body:
        return TokenPair.from_answer(body)
    code = str(body.get("error") or "") if isinstance(body, dict) else ""
    description = str(body.get("error_description") or "") if isinstance(body, dict) else ""
    error_class: type[errors.BitrixError] = errors.TokenRefreshError
    message = f"OAuth server answered HTTP {response.status_code}"
    if code in ("invalid_grant", "invalid_client", "PAYMENT_REQUIRED") or response.status_code in (400, 401):
        error_class = errors.AuthLostError
        message = (
            f"portal authorisation lost ({code or response.status_code}): reinstall or re-authorise the application"
        )
    raise error_class(
        message,
        method="oauth.token",
        code=code,
        description=description,
        status=response.status_code,
        body=response.text,
        portal=portal,
    )


async def refresh_tokens(http: httpx.AsyncClient, auth: OAuthAuth, portal: str) -> TokenPair:
    """Exchange the refresh token for a new pair. ``invalid_grant``/``invalid_client`` mean auth is lost."""
    params = {
        "grant_type": "refresh_token",
        "client_id": auth.client_id,
        "client_secret": auth.client_secret,
        "refresh_token": auth.tokens.refresh_token,
    }
    try:
        pair = await request_tokens(http, auth.token_url, params, portal)
    except errors.BitrixError as exc:
        outcome = "unreachable" if exc.status is None else (exc.code or "error")
        metrics.REFRESHES.labels(portal_label(portal), outcome).inc()
        log.warning("bitrix.token_refresh_failed", portal=portal, status=exc.status, code=exc.code)
        raise
    metrics.REFRESHES.labels(portal_label(portal), "ok").inc()
    log.info("bitrix.token_refreshed", portal=portal)
    if pair.client_endpoint:
        auth.client_endpoint = pair.client_endpoint
    return pair


AuthLost = Callable[[errors.AuthLostError], Awaitable[None]]


class TokenKeeper:
    """The tokens of one connection: single-flight refresh, the new pair persisted before use, lost auth remembered.

    One refresh runs per portal however many calls see the token expire: in this process by a mutex, across
    processes by the shared ``lock`` plus ``load_tokens`` (another process may have refreshed and saved first).
    ``invalid_grant`` means the authorisation is gone: calls then fail fast with it until new tokens are set.
    A webhook connection has no tokens: ``access_token`` is None and nothing here is used.
    """

    def __init__(
        self,
        http: httpx.AsyncClient,
        auth: Auth,
        key: str,
        lock: RefreshLock,
        *,
        on_tokens: TokenSaver | None = None,
        load_tokens: TokenLoader | None = None,
        on_auth_lost: AuthLost | None = None,
    ) -> None:
        self.http = http
        self.auth = auth
        self.key = key
        self.lock = lock
        self._on_tokens = on_tokens
        self._load_tokens = load_tokens
        self._on_auth_lost = on_auth_lost
        self._mutex = asyncio.Lock()
        self.lost: errors.AuthLostError | None = None

    @property
    def access_token(self) -> str | None:
        return self.auth.tokens.access_token if isinstance(self.auth, OAuthAuth) else None

    def raise_if_lost(self) -> None:
        if self.lost is not None:
            raise self.lost

    def set_tokens(self, tokens: TokenPair) -> None:
        """New tokens from outside (re-install, re-authorisation): also clears a lost-auth state."""
        if not isinstance(self.auth, OAuthAuth):
            raise errors.ConfigurationError("a webhook connection has no tokens", portal=self.key)
        self.auth.tokens = tokens
        self.lost = None

    async def refresh(self, stale_access_token: str) -> None:
        """Refresh once for everyone who saw ``stale_access_token`` expire."""
        auth = self.auth
        if not isinstance(auth, OAuthAuth):
            raise errors.ConfigurationError("a webhook connection cannot refresh tokens", portal=self.key)
        async with self._mutex:
            if auth.tokens.access_token != stale_access_token:
                return  # another coroutine already refreshed
            async with self.lock.hold(self.key):
                if self._load_tokens is not None:
                    stored = await self._load_tokens()
                    if stored is not None and stored.access_token != stale_access_token:
                        auth.tokens = stored  # another process refreshed and saved first
                        return
                try:
                    pair = await refresh_tokens(self.http, auth, self.key)
                except errors.AuthLostError as exc:
                    elsewhere = await self._refreshed_elsewhere(auth.tokens.refresh_token)
                    if elsewhere is not None:
                        auth.tokens = elsewhere
                        return
                    self.lost = exc
                    if self._on_auth_lost is not None:
                        await self._on_auth_lost(exc)
                    raise
                if self._on_tokens is not None:
                    await self._on_tokens(pair)  # persisted before anyone uses it
                auth.tokens = pair

    async def _refreshed_elsewhere(self, used: str) -> TokenPair | None:
        """The refresh token was refused: if someone else (a process outside our lock) refreshed with it first and
        saved the new pair, that pair; otherwise None (the portal really withdrew it). Declaring a portal lost
        takes a re-installation to undo, so the store is asked twice, the second time after its writer had time to
        commit."""
        if self._load_tokens is None:
            return None
        for pause in (0.0, 0.5):
            await asyncio.sleep(pause)
            stored = await self._load_tokens()
            if stored is not None and stored.refresh_token != used:
                log.info("bitrix.tokens_refreshed_elsewhere", portal=portal_label(self.key))
                return stored
        return None
