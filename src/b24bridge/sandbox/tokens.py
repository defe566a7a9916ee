"""Issuing OAuth tokens: shared by the OAuth server, application install and robot calls."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .runtime import Sandbox
from .state import AccessToken, Application, RefreshToken, token


@dataclass
class TokenPair:
    access: AccessToken
    refresh: RefreshToken


def issue(sandbox: Sandbox, app: Application, user_id: int) -> TokenPair:
    """A new access token and a new refresh token for ``user_id`` in ``app``."""
    now = sandbox.now()
    cfg = sandbox.config
    access = AccessToken(token(), app.client_id, user_id, now + cfg.access_token_ttl)
    refresh = RefreshToken(token(), app.client_id, user_id, now + cfg.refresh_token_ttl)
    sandbox.world.access_tokens[access.token] = access
    sandbox.world.refresh_tokens[refresh.token] = refresh
    _forget_stale(sandbox)
    return TokenPair(access, refresh)


def _forget_stale(sandbox: Sandbox) -> None:
    """Drop access tokens that expired a day ago so a long-running sandbox does not grow without bound."""
    world = sandbox.world
    if len(world.access_tokens) > 10_000:
        horizon = sandbox.now() - 86_400
        for key in [k for k, t in world.access_tokens.items() if t.expires_at < horizon]:
            del world.access_tokens[key]


def revoke_app(sandbox: Sandbox, client_id: str) -> None:
    world = sandbox.world
    for store in (world.access_tokens, world.refresh_tokens):
        for key in [k for k, t in store.items() if t.client_id == client_id]:
            del store[key]


def auth_block(sandbox: Sandbox, app: Application, pair: TokenPair | None, user_id: int) -> dict[str, Any]:
    """The ``auth[...]`` fields the portal puts into install events, bound events and robot calls."""
    block: dict[str, Any] = {}
    if pair is not None:
        block.update(
            access_token=pair.access.token,
            expires=str(int(pair.access.expires_at)),
            expires_in=str(sandbox.config.access_token_ttl),
        )
    block.update(
        scope=",".join(app.scopes),
        domain=sandbox.domain,
        server_endpoint=sandbox.server_endpoint,
        status=app.status,
        client_endpoint=sandbox.client_endpoint,
        member_id=sandbox.world.member_id,
    )
    if pair is not None:
        block.update(user_id=str(user_id), refresh_token=pair.refresh.token)
    block["application_token"] = app.application_token
    return block


def token_response(sandbox: Sandbox, app: Application, pair: TokenPair) -> dict[str, Any]:
    """The OAuth server's answer to ``/oauth/token/`` (REFERENCE 4.1-4.2)."""
    return {
        "access_token": pair.access.token,
        "expires": int(pair.access.expires_at),
        "expires_in": sandbox.config.access_token_ttl,
        "scope": ",".join(app.scopes),
        "domain": sandbox.domain,
        "server_endpoint": sandbox.server_endpoint,
        "status": app.status,
        "client_endpoint": sandbox.client_endpoint,
        "member_id": sandbox.world.member_id,
        "user_id": pair.access.user_id,
        "refresh_token": pair.refresh.token,
    }
