"""Service configuration read from ``B24BRIDGE_*`` environment variables and ``.env``."""

from __future__ import annotations

import ipaddress
import re
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import Field, PostgresDsn, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

ENV_PREFIX = "B24BRIDGE_"

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
# Close to the Standard Webhooks schedule (5 s, 5 min, 30 min, 2 h, 5 h, 10 h...), with one more early step and
# capped so the whole ladder spans about a day: a portal can be unreachable for hours.
DEFAULT_RETRY_SCHEDULE = "5s,30s,5m,30m,2h,5h,8h,8h"
# The public Bitrix24 cloud's portal zones (``name.bitrix24.com``); self-hosted portals are added by the operator.
_CLOUD_ZONES = ("com", "ru", "de", "eu", "es", "fr", "it", "pl", "uk", "in", "jp", "cn", "com.br", "com.tr", "by")
DEFAULT_PORTAL_DOMAINS = ",".join(f"*.bitrix24.{zone}" for zone in (*_CLOUD_ZONES, "kz", "ua", "id", "vn"))
ADMIN_TOKEN_MIN_LENGTH = 24
_RATE = re.compile(r"^\s*(\d+)\s*/\s*(.+)$")
_LABEL = r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?"
_DOMAIN_PATTERN = re.compile(rf"^(?:\*\.)?(?:{_LABEL}\.)*{_LABEL}(?::\d{{1,5}})?$")


def is_loopback(host: str) -> bool:
    """Whether ``host`` (a name or an address) is this machine: ``localhost`` or a loopback address."""
    try:
        return host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def parse_durations(text: str) -> tuple[float, ...]:
    """``"5s,30s,5m"`` -> (5.0, 30.0, 300.0); a bare number is seconds."""
    durations = []
    for part in text.split(","):
        match = _DURATION.match(part)
        if match is None:
            raise ValueError(f"{part.strip()!r} is not a duration like 30s, 5m or 2h")
        durations.append(float(match.group(1)) * _UNIT_SECONDS[match.group(2) or "s"])
    if not durations or any(d <= 0 for d in durations):
        raise ValueError("needs at least one duration, each above zero")
    return tuple(durations)


def parse_rate(text: str) -> tuple[int, float]:
    """``"10/10m"`` -> (10, 600.0): so many events per that duration."""
    match = _RATE.match(text)
    if match is None or int(match.group(1)) < 1:
        raise ValueError(f"{text.strip()!r} is not a rate like 10/10m")
    [seconds] = parse_durations(match.group(2))
    return int(match.group(1)), seconds


def parse_domain_patterns(text: str) -> tuple[str, ...]:
    """``"*.bitrix24.com, crm.example.com"`` -> lower-cased patterns; ``*.`` stands for any subdomain."""
    patterns = tuple(part.strip().lower() for part in text.split(",") if part.strip())
    bad = [pattern for pattern in patterns if not _DOMAIN_PATTERN.match(pattern)]
    if not patterns or bad:
        raise ValueError(f"not host name patterns: {bad or text!r}")
    return patterns


LogLevel = Literal["DEBUG", "INFO", "WARNING", "ERROR"]
LogFormat = Literal["auto", "json", "console"]
Environment = Literal["development", "production"]


class SettingsError(Exception):
    """Configuration is invalid; ``str(exc)`` is ready to show to an operator, one line per setting."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("\n".join(problems))


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_file=".env",
        env_file_encoding="utf-8",
        # An exported-but-empty variable (``B24BRIDGE_DATABASE_URL=``) means "use the default",
        # which is what shell users expect when they blank a line in .env.
        env_ignore_empty=True,
        extra="ignore",
    )

    database_url: PostgresDsn | None = None
    data_dir: Path = Path("./.b24bridge")
    redis_url: str | None = None
    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=1, le=65535)
    log_level: LogLevel = "INFO"
    log_format: LogFormat = "auto"
    public_url: str | None = None
    environment: Environment = "development"
    # A robot job spends nearly all its time waiting on the portal's limits, which costs nothing in asyncio, and
    # only jobs waiting at the same time can share a batch: see the README ("Worker concurrency") for the figures.
    worker_concurrency: int = Field(default=250, ge=1)
    # Jobs of one portal running at once in each worker (its lane, b24bridge.lanes): what its limits can use.
    worker_portal_slots: int = Field(default=100, ge=1)
    # Run a job worker inside ``serve``; a scaled deployment turns this off and runs ``b24bridge worker``.
    worker_in_process: bool = True
    # Where ``b24bridge worker`` serves /metrics (the API serves its own at /metrics); 0 turns it off.
    metrics_port: int = Field(default=9100, ge=0, le=65535)
    # The Bitrix24 application b24bridge is: its OAuth credentials and the OAuth server that issues tokens.
    app_client_id: str | None = None
    app_client_secret: SecretStr | None = None
    oauth_server: str = "https://oauth.bitrix.info"
    # Keys that encrypt portal tokens at rest: "kid:base64url-32-byte-key[,kid:key...]", the first one encrypts.
    encryption_keys: SecretStr | None = None
    # Concurrent calls to one portal share batch requests; off sends each call alone (debugging, baselines).
    bitrix_autobatch: bool = True
    # Tries of one request that failed in passing (a refused connection, a gateway 503), a few seconds apart at
    # most, before the run's own attempt fails and its retry schedule takes over; 1 leaves every retry to the
    # schedule.
    bitrix_retry_attempts: int = Field(default=4, ge=1, le=10)
    # Pauses between attempts of a run (a robot's work and answer, a delivery); after the last one it is dead.
    retry_schedule: str = DEFAULT_RETRY_SCHEDULE
    # The bridge's route file; a missing file at the default place means "no routes", at a named place an error.
    routes: Path = Path("./routes.yaml")
    # The same trigger (source, route, deal, stage, its fields) again within this many seconds is a duplicate.
    bridge_dedupe_window: float = Field(default=60.0, gt=0, le=86400)
    # The local spool (DATA_DIR/spool) that keeps accepted calls while the database is away: its size in MB.
    spool_max_mb: int = Field(default=1024, ge=1, le=1024 * 1024)
    # The door (docs/security.md): seconds a request body may take to arrive once the handler asks for it.
    body_read_timeout: float = Field(default=10.0, gt=0, le=300)
    # Hosts /oauth/start may send an administrator to (over https): comma-separated, ``*.`` for any subdomain.
    portal_domains: str = DEFAULT_PORTAL_DOMAINS
    # Installations not yet confirmed (each costs a request to the OAuth server with our client secret), per client
    # address and per claimed portal: "count/duration". Confirmed ones give their attempt back.
    install_limit_per_address: str = "10/10m"
    install_limit_per_portal: str = "5/10m"
    # The operator's key to the admin page and API (``/admin``, ``/api``). Unset: both answer only on loopback, and
    # only while the embedded defaults are in use (no database URL, development); otherwise they are off.
    admin_token: SecretStr | None = None
    # Who may tell ``serve`` the client's address and scheme (X-Forwarded-For/-Proto): the reverse proxy's
    # addresses or networks, comma-separated ("*": anyone, only when nothing else can reach the port).
    forwarded_allow_ips: str = "127.0.0.1"
    # Networks a route's HTTPS endpoint (your own system) may resolve to besides public addresses, comma-separated
    # ("10.0.0.0/8, 127.0.0.1"): none by default, so a route file cannot make b24bridge call into private networks.
    # Plain http is allowed only to these.
    endpoint_allow_networks: str = ""
    # Seconds an endpoint has to answer a hand-over before the attempt counts as uncertain (and is retried).
    endpoint_timeout: float = Field(default=10.0, gt=0, le=300)

    @field_validator("forwarded_allow_ips")
    @classmethod
    def _proxies(cls, value: str) -> str:
        items = [item.strip() for item in value.split(",") if item.strip()]
        if not items:
            raise ValueError("no address given")
        for item in items:
            if item != "*":
                ipaddress.ip_network(item, strict=False)  # ValueError names nothing secret
        return ",".join(items)

    @field_validator("endpoint_allow_networks")
    @classmethod
    def _endpoint_networks(cls, value: str) -> str:
        items = [item.strip() for item in value.split(",") if item.strip()]
        for item in items:
            ipaddress.ip_network(item, strict=False)
        return ",".join(items)

    @field_validator("admin_token")
    @classmethod
    def _admin_token(cls, value: SecretStr | None) -> SecretStr | None:
        # Long enough that guessing it over HTTP is hopeless (the login is not rate-limited).
        if value is not None and len(value.get_secret_value().strip()) < ADMIN_TOKEN_MIN_LENGTH:
            raise ValueError(f"must be at least {ADMIN_TOKEN_MIN_LENGTH} characters")
        return value

    @field_validator("install_limit_per_address", "install_limit_per_portal")
    @classmethod
    def _rate(cls, value: str) -> str:
        parse_rate(value)
        return value

    @field_validator("portal_domains")
    @classmethod
    def _domains(cls, value: str) -> str:
        parse_domain_patterns(value)
        return value

    @field_validator("retry_schedule")
    @classmethod
    def _durations(cls, value: str) -> str:
        parse_durations(value)
        return value

    @field_validator("public_url", "oauth_server")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        if value is None:
            return None
        parts = urlsplit(value.strip())
        if parts.scheme not in ("http", "https") or not parts.hostname or parts.query or parts.fragment:
            raise ValueError("not an http(s) URL")
        if parts.scheme == "http" and not is_loopback(parts.hostname):
            raise ValueError("plain http is only for loopback addresses")
        return value.strip().rstrip("/")

    @field_validator("redis_url")
    @classmethod
    def _redis_url(cls, value: str | None) -> str | None:
        if value is None:
            return None
        parts = urlsplit(value.strip())
        if parts.scheme not in ("redis", "rediss", "unix") or not (parts.hostname or parts.path):
            raise ValueError("not a Redis URL")
        return value.strip()

    @model_validator(mode="after")
    def _production_is_https(self) -> Settings:
        if self.environment == "production" and self.public_url and not self.public_url.startswith("https://"):
            raise ValueError("public_url: production needs an https:// URL (Bitrix24 calls it from the Internet)")
        return self

    @property
    def retry_delays(self) -> tuple[float, ...]:
        return parse_durations(self.retry_schedule)

    @field_validator("log_level", "log_format", "environment", mode="before")
    @classmethod
    def _case_insensitive(cls, value: Any, info: Any) -> Any:
        if not isinstance(value, str):
            return value
        return value.strip().upper() if info.field_name == "log_level" else value.strip().lower()

    @property
    def portal_domain_patterns(self) -> tuple[str, ...]:
        return parse_domain_patterns(self.portal_domains)

    @property
    def embedded_database(self) -> bool:
        return self.database_url is None


# What each setting accepts, phrased for the operator who has to fix it.
_ALLOWED: dict[str, str] = {
    "database_url": "must be a PostgreSQL URL like postgresql://user:password@host:5432/dbname, "
    "or unset to use the embedded database",
    "data_dir": "must be a directory path",
    "redis_url": "must be a Redis URL like redis://host:6379/0 (or rediss://, unix://)",
    "host": "must be a host name or IP address to listen on",
    "port": "must be an integer between 1 and 65535",
    "log_level": "must be one of DEBUG, INFO, WARNING, ERROR",
    "log_format": "must be one of auto, json, console",
    "public_url": "must be the externally reachable https:// URL of this service "
    "(plain http only on loopback, for the sandbox)",
    "environment": "must be one of development, production",
    "worker_concurrency": "must be an integer of at least 1",
    "worker_in_process": "must be true or false",
    "worker_portal_slots": "must be an integer of at least 1",
    "spool_max_mb": "must be a whole number of megabytes from 1 to 1048576",
    "metrics_port": "must be a port between 1 and 65535, or 0 for no metrics endpoint in workers",
    "bitrix_autobatch": "must be true or false",
    "bitrix_retry_attempts": "must be an integer from 1 to 10",
    "routes": "must be the path of the bridge's route file (YAML)",
    "bridge_dedupe_window": "must be a number of seconds above 0 and at most 86400",
    "retry_schedule": "must be durations separated by commas, like 5s,30s,5m,30m,2h (units ms, s, m, h, d)",
    "app_client_id": "must be the application's client_id from the Bitrix24 developer resources",
    "app_client_secret": "must be the application's client_secret",
    "oauth_server": "must be the OAuth server's https URL, https://oauth.bitrix.info unless you run the sandbox "
    "(plain http only on loopback)",
    "encryption_keys": "must be kid:key pairs separated by commas, each key 32 bytes in url-safe base64",
    "body_read_timeout": "must be a number of seconds above 0 and at most 300",
    "portal_domains": "must be host name patterns separated by commas, like *.bitrix24.com,crm.example.com",
    "install_limit_per_address": "must be a rate like 10/10m (a count, a slash, a duration)",
    "install_limit_per_portal": "must be a rate like 5/10m (a count, a slash, a duration)",
    "forwarded_allow_ips": "must be IP addresses or networks separated by commas, like 127.0.0.1,172.18.0.0/16 (or *)",
    "admin_token": f"must be at least {ADMIN_TOKEN_MIN_LENGTH} characters, e.g. the output of "
    "python -c 'import secrets; print(secrets.token_urlsafe(32))'",
}

_SECRETS = frozenset({"admin_token", "app_client_secret", "encryption_keys"})
_URL_PASSWORD = re.compile(r"(://[^:/@\s]*:)([^@/\s]+)(@)")


def _shown(value: Any) -> str:
    # Error messages end up in terminals and CI logs; never echo a password back.
    text = value if isinstance(value, str) else str(value)
    text = _URL_PASSWORD.sub(r"\1***\3", text)
    if len(text) > 80:
        text = text[:77] + "..."
    return repr(text)


def describe_validation_error(exc: ValidationError) -> list[str]:
    problems: list[str] = []
    seen: set[str] = set()
    for error in exc.errors():
        if not error.get("loc"):
            # A rule across settings (model validator) says "field: what is wrong" itself.
            field, _, text = str(error.get("msg", "")).removeprefix("Value error, ").partition(": ")
            problems.append(f"{ENV_PREFIX}{field.upper()}: {text}")
            continue
        field = str(error["loc"][0])
        if field in seen:
            # A union type (``X | None``) reports one error per member; one line is enough.
            continue
        seen.add(field)
        env_var = f"{ENV_PREFIX}{field.upper()}"
        allowed = _ALLOWED.get(field, error.get("msg", "is invalid"))
        if error.get("type") == "missing":
            problems.append(f"{env_var}: is required; it {allowed}")
        elif field in _SECRETS:
            problems.append(f"{env_var}: {allowed}")  # even a wrong secret is one: never shown
        else:
            problems.append(f"{env_var}: {allowed} (got {_shown(error.get('input'))})")
    return problems


def load_settings(**overrides: Any) -> Settings:
    """Read settings from the environment; raise :class:`SettingsError` with operator-readable lines."""
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        raise SettingsError(describe_validation_error(exc)) from None
