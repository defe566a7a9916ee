"""What the portal sends when b24bridge is installed, parsed and checked before anything is stored."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict

from b24bridge.bitrix import Limits
from b24bridge.bitrix.errors import AuthLostError


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


def _missing(form: Mapping[str, str], names: list[str]) -> list[str]:
    return [name for name in names if not str(form.get(name) or "").strip()]


def _int(value: str | None, name: str) -> int | None:
    if value is None or value == "":
        return None
    try:
        return int(value)
    except ValueError:
        raise InstallError(f"{name} must be an integer") from None


def check_domain(domain: str) -> str:
    """A bare host[:port]: no scheme, path or credentials (it ends up in URLs we build)."""
    domain = domain.strip().lower()
    parts = urlsplit(f"//{domain}")
    if not domain or not parts.hostname or parts.path or parts.query or parts.username or "/" in domain:
        raise InstallError("domain must be a portal host name like portal.bitrix24.com")
    try:
        parts.port  # noqa: B018 - raises on a bad port
    except ValueError:
        raise InstallError("domain has an invalid port") from None
    return domain


def event_claim(form: Mapping[str, str]) -> InstallClaim:
    """ONAPPINSTALL as form fields with PHP brackets (``auth[access_token]``, ``data[VERSION]``) (REFERENCE 4.3b)."""
    event = str(form.get("event") or "").upper()
    if event != "ONAPPINSTALL":
        raise InstallError(f"expected event ONAPPINSTALL, got {event or 'no event'}")
    required = ["access_token", "refresh_token", "member_id", "domain", "application_token"]
    missing = _missing(form, [f"auth[{name}]" for name in required])
    if missing:
        raise InstallError("missing fields: " + ", ".join(missing))
    return InstallClaim(
        via="event",
        member_id=form["auth[member_id]"].strip(),
        domain=check_domain(form["auth[domain]"]),
        client_endpoint=form.get("auth[client_endpoint]") or None,
        server_endpoint=form.get("auth[server_endpoint]") or None,
        scope=form.get("auth[scope]") or "",
        refresh_token=form["auth[refresh_token]"],
        application_token=form["auth[application_token]"],
        app_version=_int(form.get("data[VERSION]"), "data[VERSION]"),
    )


def frame_claim(form: Mapping[str, str], query: Mapping[str, str]) -> InstallClaim:
    """The install page opened in the portal's frame: DOMAIN/PROTOCOL in the query, the rest in the body (4.3a)."""
    missing = _missing(form, ["AUTH_ID", "REFRESH_ID", "member_id"]) + _missing(query, ["DOMAIN"])
    if missing:
        raise InstallError("missing fields: " + ", ".join(missing))
    domain = check_domain(query["DOMAIN"])
    scheme = "http" if query.get("PROTOCOL") == "0" else "https"
    return InstallClaim(
        via="frame",
        member_id=form["member_id"].strip(),
        domain=domain,
        client_endpoint=f"{scheme}://{domain}/rest/",
        server_endpoint=form.get("SERVER_ENDPOINT") or None,
        scope=form.get("APPLICATION_SCOPE") or "",
        refresh_token=form["REFRESH_ID"],
        application_token=form.get("APPLICATION_TOKEN") or None,
    )
