"""The OAuth 2.0 authorization-code flow as b24bridge starts and finishes it (REFERENCE 4.1).

``/oauth/start`` sends an administrator's browser to a portal, so it only ever sends it to a portal: a host that
matches the configured patterns (``B24BRIDGE_PORTAL_DOMAINS``, the Bitrix24 cloud by default), over https; in
development also a loopback host over http (the local sandbox). It sets a cookie holding a fresh secret and puts
the secret's digest into the signed ``state``, so the callback is accepted only in the browser that started the
flow, once (the state's nonce is marked used in the database), and before the state expires.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass
from urllib.parse import urlencode, urlsplit

from psycopg_pool import AsyncConnectionPool

from . import crypto, repository
from .install import Installer
from .schemas import AppCredentials, InstallError, PortalRecord, check_domain

# The cookie ``/oauth/start`` sets and the callback reads; it is good for one flow.
BROWSER_COOKIE = "b24bridge_oauth"


def _loopback(host: str) -> bool:
    try:
        return host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class PortalDomains:
    """Which hosts are portals: ``*.bitrix24.com`` (any subdomain) or an exact ``host[:port]``, lower case."""

    def __init__(self, patterns: Sequence[str], *, loopback: bool = False) -> None:
        self.patterns = tuple(patterns)
        self.loopback = loopback
        alternatives = (
            r"(?:[a-z0-9-]+\.)+" + re.escape(p[2:]) if p.startswith("*.") else re.escape(p) for p in self.patterns
        )
        self._pattern = re.compile("|".join(alternatives))

    def portal(self, domain: str) -> tuple[str, str]:
        """``(host[:port], base URL)`` of the portal ``domain`` names, or :class:`InstallError` if it is none."""
        domain = check_domain(domain.removeprefix("https://").removeprefix("http://").rstrip("/"))
        if self.loopback and _loopback(urlsplit(f"//{domain}").hostname or ""):
            return domain, f"http://{domain}"
        if not self._pattern.fullmatch(domain):
            raise InstallError("domain is not a Bitrix24 portal this b24bridge serves (B24BRIDGE_PORTAL_DOMAINS)")
        return domain, f"https://{domain}"


@dataclass(frozen=True)
class OAuthStart:
    """Where to send the browser, and the secret to set in its cookie."""

    url: str
    browser_secret: str
    max_age: int


class OAuthFlow:
    def __init__(
        self,
        pool: AsyncConnectionPool,
        keys: crypto.Keyring,
        app: AppCredentials | None,
        installer: Installer,
        domains: PortalDomains,
    ) -> None:
        self.pool = pool
        self.keys = keys
        self.app = app
        self.installer = installer
        self.domains = domains

    def start(self, domain: str) -> OAuthStart:
        """The portal's authorisation page with a signed, expiring ``state`` bound to a new browser secret."""
        if self.app is None:
            raise InstallError("b24bridge has no application credentials (B24BRIDGE_APP_CLIENT_ID)", 503)
        domain, base = self.domains.portal(domain)
        secret = crypto.new_browser_secret()
        state = crypto.make_state(self.keys, domain, time.time(), secret)
        query = urlencode({"client_id": self.app.client_id, "state": state})
        return OAuthStart(f"{base}/oauth/authorize/?{query}", secret, int(crypto.STATE_TTL))

    async def finish(
        self,
        *,
        code: str,
        state: str,
        domain: str,
        member_id: str,
        scope: str | None,
        browser_secret: str | None,
        client: str | None = None,
    ) -> PortalRecord:
        """The redirect back from the portal: ``state`` must be ours, unexpired, unused, for this very portal and
        come back to the browser that started the flow. Only then is the code exchanged."""
        claim = crypto.read_state(self.keys, state, time.time())
        if claim is None:
            raise InstallError("invalid or expired state: start the installation again")
        if not browser_secret or not claim.started_by(browser_secret):
            raise InstallError("this browser did not start the installation: start it again from this browser")
        if check_domain(domain) != claim.domain:
            raise InstallError("the portal in the callback is not the one the authorisation was started for")
        expires = dt.datetime.fromtimestamp(claim.expires, dt.UTC)
        async with self.pool.connection() as conn:
            fresh = await repository.use_oauth_state(conn, claim.nonce, expires)
        if not fresh:
            raise InstallError("this state was already used: start the installation again")
        return await self.installer.from_oauth(code, domain, member_id, scope, client)
