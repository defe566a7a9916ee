"""The OAuth 2.0 authorization-code flow as b24bridge starts and finishes it (REFERENCE 4.1)."""

from __future__ import annotations

import time
from urllib.parse import urlencode

from b24bridge.bitrix.auth import check_url
from b24bridge.bitrix.errors import ConfigurationError
from b24bridge.context import current

from . import crypto, service
from .schemas import InstallError, check_domain


def start_url(domain: str) -> str:
    """Where to send the administrator: the portal's ``/oauth/authorize/`` with a signed, expiring ``state``.

    https only, except a loopback portal (the local sandbox) which is spoken to over plain http.
    """
    settings = current().settings
    if not settings.app_client_id:
        raise InstallError("b24bridge has no application credentials (B24BRIDGE_APP_CLIENT_ID)", 503)
    domain = check_domain(domain.removeprefix("https://").removeprefix("http://").rstrip("/"))
    url = f"http://{domain}/oauth/authorize/"
    try:
        check_url(url, "portal")  # accepts plain http only for loopback hosts
    except ConfigurationError:
        url = f"https://{domain}/oauth/authorize/"
    state = crypto.make_state(crypto.keyring(settings), domain, time.time())
    return f"{url}?{urlencode({'client_id': settings.app_client_id, 'state': state})}"


async def finish(
    *, code: str, state: str, domain: str, member_id: str, scope: str | None, server_domain: str | None
) -> service.PortalRecord:
    """The redirect back from the portal: ``state`` must be ours, unexpired and for this very portal."""
    started_for = crypto.read_state(crypto.keyring(current().settings), state, time.time())
    if started_for is None:
        raise InstallError("invalid or expired state: start the installation again")
    if check_domain(domain) != started_for:
        raise InstallError("the portal in the callback is not the one the authorisation was started for")
    return await service.install_from_oauth(code, domain, member_id, scope, server_domain)
