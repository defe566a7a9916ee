"""What the portal sends when b24bridge is installed, parsed and checked before anything is stored."""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict

from b24bridge import forms
from b24bridge.bitrix import Limits
from b24bridge.bitrix.errors import AuthLostError

# A portal's member_id is 32 hex digits on the cloud; letters, digits and ``._-`` up to 64 leave room for others
# and keep whatever is looked up or stored short and printable.
_MEMBER_ID = re.compile(r"[0-9A-Za-z_.-]{1,64}")
# Application tokens are 32 hex digits; a generous cap keeps the MAC input small.
MAX_TOKEN_LENGTH = 256


@dataclass(frozen=True)
class AppCredentials:
    """The Bitrix24 application b24bridge is: its OAuth client and the OAuth server that issues its tokens."""

    client_id: str
    client_secret: str
    oauth_server: str

    @property
    def token_url(self) -> str:
        return f"{self.oauth_server.rstrip('/')}/oauth/token/"

    def __repr__(self) -> str:  # the secret never reaches a log or a traceback
        return f"AppCredentials(client_id={self.client_id!r}, oauth_server={self.oauth_server!r})"


@dataclass(frozen=True)
class PortalRecord:
    """An installed portal as the rest of the service sees it (no token, no hash)."""

    member_id: str
    domain: str
    client_endpoint: str
    status: str
    scope: str
    limits: Limits
    app_version: int | None


@dataclass(frozen=True)
class PortalStanding:
    """A portal with what an operator checks first: whether it holds tokens and until when (never the tokens)."""

    record: PortalRecord
    has_tokens: bool
    token_expires_at: datetime | None
    installed_at: datetime
    updated_at: datetime
    uninstalled_at: datetime | None


class PortalUnavailableError(AuthLostError):
    """The portal is uninstalled or lost its authorisation: no calls until it is installed or authorised again."""


class InstallError(Exception):
    """An installation request that cannot be accepted; ``status`` is the HTTP answer, the text is safe to show."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


class InstallClaim(BaseModel):
    """An installation as the caller describes it; the OAuth server confirms it before it is trusted."""

    model_config = ConfigDict(frozen=True)

    via: str  # 'event', 'frame' or 'oauth'
    member_id: str
    domain: str
    client_endpoint: str | None = None
    server_endpoint: str | None = None
    scope: str = ""
    refresh_token: str
    application_token: str | None = None
    app_version: int | None = None

    def __repr__(self) -> str:  # tokens never end up in logs or tracebacks
        return f"InstallClaim(via={self.via!r}, member_id={self.member_id!r}, domain={self.domain!r})"

    __str__ = __repr__


def member_id(form: Mapping[str, Any], *path: forms.PathPart, required: bool = True) -> str | None:
    """The member_id at ``path``, checked (:class:`~b24bridge.forms.FormError` naming the field); None if absent
    and not ``required``."""
    value = forms.text(form, *path, max_len=64) if required else forms.optional_text(form, *path, max_len=64)
    if value is not None and not _MEMBER_ID.fullmatch(value.strip()):
        raise forms.FormError(f"field {forms.field_name(*path)}: not a member_id", field=forms.field_name(*path))
    return value.strip() if value is not None else None


# What another domain does with a portal's event (the bridge: a deal changed): called with the portal's member_id,
# the event, the checked form, the request's correlation id and (when the token could not be checked yet) the check
# to make when the database is back, after the application token was verified; its
# answer goes back to the portal as JSON.
EventHandler = Callable[[str, str, Mapping[str, Any], str | None, "Check | None"], Awaitable[dict[str, Any]]]


class EventRefused(Exception):
    """An event handler could not take the event: the portal is answered ``status`` with ``message``."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class Check:
    """A portal's proof of origin that could not be checked when its call came (the database was away and this
    process had not seen the portal): checked when the call is drained from the spool. Only ever kept in the spool,
    which is sealed with the service's key like every stored token."""

    member_id: str
    application_token: str


def portal_auth(form: Mapping[str, Any]) -> tuple[str | None, str | None]:
    """``auth[member_id]`` and ``auth[application_token]`` of an event or robot call, checked; None where absent."""
    token = forms.optional_text(form, "auth", "application_token", max_len=MAX_TOKEN_LENGTH)
    return member_id(form, "auth", "member_id", required=False), token


def _missing(form: Mapping[str, Any], paths: list[tuple[str, ...]]) -> list[str]:
    return [forms.field_name(*path) for path in paths if not (forms.optional_text(form, *path) or "").strip()]


def _token(form: Mapping[str, Any], *path: str) -> str:
    return forms.text(form, *path, max_len=MAX_TOKEN_LENGTH)


# A host name or a bracketed IPv6 address, and an optional port: nothing else may end up in URLs we build.
_DOMAIN = re.compile(r"(?:[a-z0-9_-]+(?:\.[a-z0-9_-]+)*|\[[0-9a-f:.]+\])(?::[0-9]{1,5})?")


def check_domain(domain: str) -> str:
    """A bare host[:port]: no scheme, path or credentials (it ends up in URLs we build)."""
    domain = domain.strip().lower()
    if len(domain) > 255 or not _DOMAIN.fullmatch(domain):
        raise InstallError("domain must be a portal host name like portal.bitrix24.com")
    try:
        parts = urlsplit(f"//{domain}")
        parts.port  # noqa: B018 - raises on a bad port
    except ValueError:
        raise InstallError("domain has an invalid host or port") from None
    if not parts.hostname:
        raise InstallError("domain must be a portal host name like portal.bitrix24.com")
    return domain


def event_claim(form: Mapping[str, Any]) -> InstallClaim:
    """ONAPPINSTALL as a parsed PHP-bracket form (``auth[access_token]``, ``data[VERSION]``) (REFERENCE 4.3b)."""
    event = (forms.optional_text(form, "event", max_len=64) or "").upper()
    if event != "ONAPPINSTALL":
        raise InstallError(f"expected event ONAPPINSTALL, got {forms.shown(event) or 'no event'}")
    required = ["access_token", "refresh_token", "member_id", "domain", "application_token"]
    missing = _missing(form, [("auth", name) for name in required])
    if missing:
        raise InstallError("missing fields: " + ", ".join(missing))
    return InstallClaim(
        via="event",
        member_id=str(member_id(form, "auth", "member_id")),
        domain=check_domain(forms.text(form, "auth", "domain", max_len=255)),
        client_endpoint=forms.optional_text(form, "auth", "client_endpoint", max_len=2048),
        server_endpoint=forms.optional_text(form, "auth", "server_endpoint", max_len=2048),
        scope=forms.optional_text(form, "auth", "scope") or "",
        refresh_token=_token(form, "auth", "refresh_token"),
        application_token=_token(form, "auth", "application_token"),
        app_version=forms.optional_integer(form, "data", "VERSION", lo=0, hi=2**31 - 1),
    )


def frame_claim(form: Mapping[str, Any], query: Mapping[str, Any]) -> InstallClaim:
    """The install page opened in the portal's frame: DOMAIN/PROTOCOL in the query, the rest in the body (4.3a)."""
    missing = _missing(form, [("AUTH_ID",), ("REFRESH_ID",), ("member_id",)]) + _missing(query, [("DOMAIN",)])
    if missing:
        raise InstallError("missing fields: " + ", ".join(missing))
    domain = check_domain(forms.text(query, "DOMAIN", max_len=255))
    scheme = "http" if forms.optional_text(query, "PROTOCOL", max_len=8) == "0" else "https"
    application_token = forms.optional_text(form, "APPLICATION_TOKEN", max_len=MAX_TOKEN_LENGTH)
    return InstallClaim(
        via="frame",
        member_id=str(member_id(form, "member_id")),
        domain=domain,
        client_endpoint=f"{scheme}://{domain}/rest/",
        server_endpoint=forms.optional_text(form, "SERVER_ENDPOINT", max_len=2048),
        scope=forms.optional_text(form, "APPLICATION_SCOPE") or "",
        refresh_token=_token(form, "REFRESH_ID"),
        application_token=application_token,
    )
