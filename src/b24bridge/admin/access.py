"""Who may use the admin page and API, and the page's session and CSRF tokens (no web framework here).

With ``B24BRIDGE_ADMIN_TOKEN`` set, the API wants it as a bearer token and the page a session cookie that logging in
with it gives. Without it, both answer only on loopback and only while the embedded defaults are in use (no
database URL, development): a laptop running ``make run``. A service on a real database without a token has them
off, so forgetting the token never opens them.

A session is ``nonce.expiry.mac`` (the keyring's MAC, purpose ``admin_session``), bound to the admin token: a new
token ends every session made with the old one. Its CSRF token is the MAC of its nonce (purpose ``admin_csrf``), so
nothing is stored server-side and a cookie alone (what a forged cross-site form could carry) is never enough.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import urlsplit

from b24bridge.portals.crypto import Keyring
from b24bridge.settings import Settings, is_loopback

SESSION_COOKIE = "b24bridge_admin"
SESSION_TTL = 12 * 3600
CSRF_HEADER = "X-CSRF-Token"
CSRF_FIELD = "csrf"
SESSION_PURPOSE = "admin_session"
CSRF_PURPOSE = "admin_csrf"

OFF = (
    "the admin page and API are off: set B24BRIDGE_ADMIN_TOKEN (at least 24 characters) to turn them on "
    "(without it they answer only on loopback, with the embedded database, in development)"
)
LOOPBACK_ONLY = (
    "without B24BRIDGE_ADMIN_TOKEN the admin page and API answer only on loopback (127.0.0.1, ::1, localhost); "
    "set the token to reach them from elsewhere"
)


@dataclass(frozen=True)
class Refusal:
    """Why a request is not let in: its HTTP status and a message that says how to get in."""

    status: int
    message: str


@dataclass(frozen=True)
class Session:
    nonce: str
    expires: int


def _digest(text: str) -> bytes:
    # Compared as digests, so the comparison takes the same time whatever the length of what was presented.
    return hashlib.sha256(text.encode()).digest()


def _host_name(host_header: str | None) -> str:
    return urlsplit(f"//{host_header or ''}").hostname or ""


class AdminGate:
    """The admin side's door: the token check, the loopback rule, sessions and CSRF tokens."""

    def __init__(self, settings: Settings, keys: Keyring, clock: Callable[[], float] = time.time) -> None:
        token = settings.admin_token.get_secret_value() if settings.admin_token is not None else None
        self._token = _digest(token) if token is not None else None
        self.open_on_loopback = token is None and settings.embedded_database and settings.environment == "development"
        self.keys = keys
        self.clock = clock
        self._binding = hashlib.sha256(f"b24bridge:admin:{token if token is not None else ''}".encode()).hexdigest()
        self._secure_host = _https_host(settings.public_url)

    @property
    def token_required(self) -> bool:
        return self._token is not None

    def refusal(self, client_host: str | None, host_header: str | None) -> Refusal | None:
        """None if a request from ``client_host`` naming ``host_header`` may come in (credentials checked after)."""
        if self._token is not None:
            return None
        if not self.open_on_loopback:
            return Refusal(404, OFF)
        # The Host check stops DNS rebinding: a web page whose name resolves to 127.0.0.1 would otherwise be
        # same-origin with this service in the operator's browser.
        if not (client_host and is_loopback(client_host) and is_loopback(_host_name(host_header))):
            return Refusal(403, LOOPBACK_ONLY)
        return None

    def token_matches(self, presented: str | None) -> bool:
        if self._token is None or presented is None:
            return False
        return hmac.compare_digest(_digest(presented), self._token)

    # --- page sessions -------------------------------------------------------------------------------------------

    def new_session(self) -> str:
        payload = f"{secrets.token_urlsafe(18)}.{int(self.clock() + SESSION_TTL)}"
        return f"{payload}.{self.keys.mac(SESSION_PURPOSE, f'{payload}|{self._binding}')}"

    def session(self, cookie: str | None) -> Session | None:
        """The session a cookie stands for, if it is ours, unaltered, unexpired and made under the current token."""
        nonce, expires, mac = (cookie or "").split(".") if (cookie or "").count(".") == 2 else ("", "", "")
        if not mac or not self.keys.check_mac(SESSION_PURPOSE, f"{nonce}.{expires}|{self._binding}", mac):
            return None
        if not expires.isdigit() or int(expires) < self.clock():
            return None
        return Session(nonce, int(expires))

    def csrf_token(self, session: Session) -> str:
        return self.keys.mac(CSRF_PURPOSE, session.nonce)

    def csrf_matches(self, session: Session, presented: str | None) -> bool:
        return bool(presented) and self.keys.check_mac(CSRF_PURPOSE, session.nonce, presented or "")

    def secure_cookie(self, scheme: str, host_header: str | None) -> bool:
        """Whether the session cookie gets ``Secure``: the request came over https (or through a proxy that says so),
        or it is addressed to the https public URL's host (a proxy that does not say)."""
        return scheme == "https" or (self._secure_host is not None and _host_name(host_header) == self._secure_host)


def _https_host(public_url: str | None) -> str | None:
    parts = urlsplit(public_url or "")
    return parts.hostname if parts.scheme == "https" else None


def safe_return_path(path: str | None, default: str) -> str:
    """Where to send the browser after a login or an action: only a path of the admin page itself, never another
    site (``//evil.example`` is a host, ``/\\evil`` too for some browsers)."""
    if not path or not path.startswith("/admin") or "\\" in path or any(ord(c) < 0x21 for c in path):
        return default
    return path
