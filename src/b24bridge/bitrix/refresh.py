"""The token refresh exchange with the Bitrix24 OAuth server (REFERENCE 4.2)."""

from __future__ import annotations

import httpx
import structlog

from . import errors, metrics
from .auth import OAuthAuth, TokenPair

log = structlog.get_logger("b24bridge.bitrix")


async def refresh_tokens(http: httpx.AsyncClient, auth: OAuthAuth, portal: str) -> TokenPair:
    """Exchange the refresh token for a new pair. ``invalid_grant``/``invalid_client`` mean auth is lost."""
    params = {
        "grant_type": "refresh_token",
        "client_id": auth.client_id,
        "client_secret": auth.client_secret,
        "refresh_token": auth.tokens.refresh_token,
    }
    try:
        response = await http.get(auth.token_url, params=params)
    except httpx.HTTPError as exc:
        metrics.REFRESHES.labels(portal, "unreachable").inc()
        raise errors.TokenRefreshError(
            f"OAuth server unreachable: {type(exc).__name__}", method="oauth.token", portal=portal
        ) from None
    try:
        body = response.json()
    except ValueError:
        body = None
    if response.status_code == 200 and isinstance(body, dict) and "access_token" in body:
        metrics.REFRESHES.labels(portal, "ok").inc()
        log.info("bitrix.token_refreshed", portal=portal)
        pair = TokenPair.from_answer(body)
        if pair.client_endpoint:
            auth.client_endpoint = pair.client_endpoint
        return pair
    code = str(body.get("error") or "") if isinstance(body, dict) else ""
    description = str(body.get("error_description") or "") if isinstance(body, dict) else ""
    metrics.REFRESHES.labels(portal, code or "error").inc()
    log.warning("bitrix.token_refresh_failed", portal=portal, status=response.status_code, code=code)
    error_class: type[errors.BitrixError] = errors.TokenRefreshError
    message = f"OAuth server answered HTTP {response.status_code}"
    if code in ("invalid_grant", "invalid_client", "PAYMENT_REQUIRED") or response.status_code in (400, 401):
        error_class = errors.AuthLostError
        reason = code or response.status_code
        message = f"portal authorisation lost ({reason}): reinstall or re-authorise the application"
    raise error_class(
        message,
        method="oauth.token",
        code=code,
        description=description,
        status=response.status_code,
        body=response.text,
        portal=portal,
    )
