"""Who is calling: incoming-webhook credentials in the path, or an OAuth access token in ``auth``."""

from __future__ import annotations

import hmac

from . import errors
from .registry import Caller, MethodSpec
from .state import World

# Methods of the ``basic`` scope are open to every authorised caller.
BASIC = None


def webhook_caller(world: World, user_id: str, code: str, now: float) -> Caller:
    for hook in world.webhooks.values():
        if hmac.compare_digest(hook.code, code) and str(hook.user_id) == user_id:
            if hook.expires_at is not None and hook.expires_at <= now:
                raise errors.no_auth()
            user = world.users.get(hook.user_id)
            if user is None or not user.active:
                raise errors.no_auth()
            return Caller("webhook", hook.user_id, frozenset(hook.scopes), webhook_id=hook.id)
    raise errors.no_auth()


def oauth_caller(world: World, access_token: str | None, now: float) -> Caller:
    if not access_token:
        raise errors.no_auth()
    record = world.access_tokens.get(access_token)
    if record is None:
        raise errors.invalid_token()
    if record.expires_at <= now:
        raise errors.expired_token()
    app = world.apps.get(record.client_id)
    # Not ``app.installed``: a UI app calls REST from its install page before installFinish (installation-finish.md);
    # uninstalling revokes the tokens, so a token that still exists belongs to an app present on the portal.
    if app is None:
        raise errors.invalid_token()
    return Caller("oauth", record.user_id, frozenset(app.scopes), client_id=app.client_id, access_token=access_token)


def authorize(caller: Caller, spec: MethodSpec) -> None:
    """Method-level checks after authentication: application context, then scope."""
    if caller.kind == "webhook":
        if spec.auth == "app":
            raise errors.wrong_auth_type()
        if spec.auth == "app_bizproc":
            raise errors.access_denied("Application context required")
    if spec.scope is not BASIC and spec.scope not in caller.scopes:
        raise errors.insufficient_scope()
