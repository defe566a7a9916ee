"""The OAuth 2.0 authorization-code flow as b24bridge starts and finishes it (REFERENCE 4.1)."""

from __future__ import annotations

import time
from urllib.parse import urlencode

from b24bridge.bitrix.auth import check_url
from b24bridge.bitrix.errors import ConfigurationError

from . import crypto
from .install import Installer
from .schemas import AppCredentials, InstallError, PortalRecord, check_domain


class OAuthFlow:
    def __init__(self, keys: crypto.Keyring, app: AppCredentials | None, installer: Installer) -> None:
        self.keys = keys
        self.app = app
        self.installer = installer

    def start_url(self, domain: str) -> str:
        """Where to send the administrator: the portal's ``/oauth/authorize/`` with a signed, expiring ``state``.

        https only, except a loopback portal (the local sandbox) which is spoken to over plain http.
        """
        if self.app is None:
            raise InstallError("b24bridge has no application credentials (B24BRIDGE_APP_CLIENT_ID)", 503)
        domain = check_domain(domain.removeprefix("https://").removeprefix("http://").rstrip("/"))
        url = f"http://{domain}/oauth/authorize/"
        try:
            check_url(url, "portal")  # accepts plain http only for loopback hosts
        except ConfigurationError:
            url = f"https://{domain}/oauth/authorize/"
        state = crypto.make_state(self.keys, domain, time.time())
        return f"{url}?{urlencode({'client_id': self.app.client_id, 'state': state})}"

    async def finish(self, *, code: str, state: str, domain: str, member_id: str, scope: str | None) -> PortalRecord:
        """The redirect back from the portal: ``state`` must be ours, unexpired and for this very portal."""
        started_for = crypto.read_state(self.keys, state, time.time())
        if started_for is None:
            raise InstallError("invalid or expired state: start the installation again")
        if check_domain(domain) != started_for:
            raise InstallError("the portal in the callback is not the one the authorisation was started for")
        return await self.installer.from_oauth(code, domain, member_id, scope)
