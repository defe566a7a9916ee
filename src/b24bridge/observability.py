"""Logging, secret redaction and the Prometheus registry.

Bitrix24 hands out credentials in many shapes (OAuth form posts, event payloads with an ``auth``
block, incoming-webhook URLs with the secret as a path segment), and any of them can end up in a log
line through an exception message or an access log.  Every log record therefore passes through
:func:`redact_secrets` right before it is rendered.
"""

from __future__ import annotations

import datetime
import logging
import re
import sys
import time
from collections.abc import Mapping, MutableMapping
from typing import Any, Literal

import orjson
import structlog
from prometheus_client import REGISTRY, make_asgi_app
from prometheus_client.registry import CollectorRegistry

from .logsink import LineSink

__all__ = [
    "REGISTRY",
    "configure_logging",
    "flush_logs",
    "is_secret_key",
    "json_lines",
    "metrics_app",
    "redact",
    "redact_secrets",
    "redact_text",
    "write_json_line",
]

MASK = "***"

# Exact key names (compared lower-cased) whose values are credentials.
_SECRET_KEYS = frozenset(
    {
        "access_token",
        "refresh_token",
        "application_token",
        "client_secret",
        "auth",
        "auth_id",
        "refresh_id",
        "password",
        "passwd",
        "code",
        "event_token",
        "token",
        "secret",
        "api_key",
        "apikey",
        "authorization",
        "webhook_code",
        "webhook_url",
    }
)
_SECRET_SUFFIXES = ("_token", "_secret", "_password")

# Parameter names that carry credentials in query strings, form bodies and JSON.
_PARAM_NAMES = (
    r"access_token|refresh_token|application_token|client_secret|event_token|auth_id|refresh_id"
    r"|password|secret|auth(?:\[|%5b)(?:access_token|refresh_token|application_token|client_secret)(?:\]|%5d)|auth"
)

# ``name=value`` in a query string or form body.  The value runs to the next separator.
# ``code`` is only trusted right after ``?``/``&``/start so that prose like "status code=200" survives.
_QUERY = re.compile(rf"(?i)((?:^|(?<=[?&;\s\"'(,]))(?:{_PARAM_NAMES})=|(?:^|(?<=[?&]))code=)([^&\s\"'#;,)]+)")
# The same inside an URL-encoded URL (e.g. a ``redirect_uri`` parameter): ``%3Fcode%3Dabc%26``.
_QUERY_ENCODED = re.compile(rf"(?i)((?:%3f|%26)(?:{_PARAM_NAMES}|code)%3d)((?:(?!%26)[^&\s\"'#])+)")
# ``"access_token": "value"`` in JSON, and ``'access_token': 'value'`` in a Python repr.
_JSON_KEYS = rf"(?:{_PARAM_NAMES}|code|[a-z_]*_token|[a-z_]*_secret|[a-z_]*password|token|secret)"
_JSON_DQ = re.compile(rf'(?i)("{_JSON_KEYS}"\s*:\s*")((?:[^"\\]|\\.)*)(")')
_JSON_SQ = re.compile(rf"(?i)('{_JSON_KEYS}'\s*:\s*')((?:[^'\\]|\\.)*)(')")
# Bitrix24 incoming webhook: /rest/{user_id}/{secret code}/{method}
_WEBHOOK = re.compile(r"(/rest/\d+/)([^/\s?#\"']+)(?=/)")
# Credentials embedded in a URL, e.g. a database DSN in a connection error.
_URL_PASSWORD = re.compile(r"(://[^:/@\s\"']*:)([^@/\s\"']+)(@)")
_BRACKETED = re.compile(r"auth(?:\[|%5b)([a-z_]+)(?:\]|%5d)")
_BEARER = re.compile(r"(?i)\b(bearer\s+)([a-z0-9._~+/=-]+)")


# Every pattern above needs one of these; text without any (most of it) is returned after one search, not seven.
_MAYBE_SECRET = re.compile(r"(?i)token|secret|passw|auth|code|bearer|/rest/\d|://[^\s\"']*@|refresh_id")


def redact_text(text: str) -> str:
    """Return ``text`` with every credential it recognises replaced by ``***``."""
    if not text or _MAYBE_SECRET.search(text) is None:
        return text
    text = _WEBHOOK.sub(rf"\g<1>{MASK}", text)
    text = _URL_PASSWORD.sub(rf"\g<1>{MASK}\g<3>", text)
    text = _JSON_DQ.sub(rf"\g<1>{MASK}\g<3>", text)
    text = _JSON_SQ.sub(rf"\g<1>{MASK}\g<3>", text)
    text = _QUERY.sub(rf"\g<1>{MASK}", text)
    text = _QUERY_ENCODED.sub(rf"\g<1>{MASK}", text)
    text = _BEARER.sub(rf"\g<1>{MASK}", text)
    return text


def is_secret_key(key: object) -> bool:
    if not isinstance(key, str):
        return False
    lowered = key.lower()
    if lowered in _SECRET_KEYS or lowered.endswith(_SECRET_SUFFIXES):
        return True
    # Bitrix24 flattens nested form fields (``auth[access_token]``, ``auth%5Bdomain%5D``); only the
    # token members are secret, ``auth[domain]`` and ``auth[member_id]`` stay readable.
    match = _BRACKETED.fullmatch(lowered)
    return match is not None and is_secret_key(match.group(1))


def redact(value: Any) -> Any:
    """Recursively redact a structure: secret keys are masked, strings are scrubbed."""
    if isinstance(value, str):
        return redact_text(value)
    if isinstance(value, Mapping):
        return {k: _redact_item(k, v) for k, v in value.items()}
    if isinstance(value, list):
        return [redact(v) for v in value]
    if isinstance(value, tuple):
        return tuple(redact(v) for v in value)
    if isinstance(value, bytes):
        return redact_text(value.decode("utf-8", "replace"))
    return value


def _redact_item(key: Any, value: Any) -> Any:
    if is_secret_key(key):
        # Bitrix24 event payloads keep useful non-secret fields (domain, member_id) beside the tokens
        # inside ``auth``; recursing keeps those readable while the tokens are still masked.
        if isinstance(value, Mapping):
            return redact(value)
        return MASK
    return redact(value)


# structlog/stdlib bookkeeping that must pass through untouched.
_INTERNAL_KEYS = frozenset({"_record", "_from_structlog", "exc_info", "stack_info"})


def redact_secrets(_logger: Any, _method: str, event_dict: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """structlog processor: scrub credentials from every key and value of the event."""
    for key in list(event_dict):
        if key in _INTERNAL_KEYS:
            continue
        event_dict[key] = _redact_item(key, event_dict[key])
    return event_dict


def _extract_stdlib_args(_logger: Any, _method: str, event_dict: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    # Records from stdlib loggers (uvicorn, psycopg) arrive with the formatted message only; keep the
    # logger name so JSON lines can still be filtered by origin.
    record = event_dict.get("_record")
    if record is not None and "logger" not in event_dict:
        event_dict["logger"] = record.name
    return event_dict


class _SinkHandler(logging.Handler):
    """Formats in the caller's thread, writes through the sink's thread (:mod:`b24bridge.logsink`)."""

    def __init__(self, sink: LineSink) -> None:
        super().__init__()
        self.sink = sink

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.sink.write(self.format(record) + "\n")
        except Exception:
            self.handleError(record)


# The process's one sink (logging is process-wide), and whether lines are JSON: then the access log renders its own
# line (:func:`write_json_line`), which costs a fraction of a pass through structlog's processors.
_sink: LineSink | None = None
_json_lines = False


def flush_logs(timeout: float = 2.0) -> None:
    """Wait until every line logged so far is written (tests that read stderr, shutdown)."""
    if _sink is not None:
        _sink.flush(timeout)


def json_lines() -> bool:
    """Whether log lines are JSON (the access log then renders its own lines with :func:`write_json_line`)."""
    return _json_lines


def write_json_line(logger: str, event: str, fields: dict[str, Any], *, redacted: bool = False) -> None:
    """One INFO line as the JSON renderer would write it, rendered by orjson; ``fields`` are redacted here as every
    other line's are (by :func:`redact_secrets`), unless the caller says it has done so (``redacted``)."""
    if _sink is None:
        return
    if not redacted:
        fields = {key: _redact_item(key, value) for key, value in fields.items()}
    record = {"event": event, **fields, "level": "info", "logger": logger, "timestamp": _now_iso()}
    _sink.write(orjson.dumps(record, default=str).decode() + "\n")


def _orjson_text(value: Any, **_: Any) -> str:
    return orjson.dumps(value, default=str).decode()


_second: tuple[int, str] = (0, "")


def _now_iso() -> str:
    """What structlog's ISO UTC timestamp is (``2026-12-06T19:51:47.155042Z``), with the part up to the second
    formatted once per second."""
    global _second
    now = time.time()
    whole = int(now)
    if whole != _second[0]:
        _second = (whole, datetime.datetime.fromtimestamp(whole, datetime.UTC).strftime("%Y-%m-%dT%H:%M:%S"))
    return f"{_second[1]}.{int((now - whole) * 1_000_000):06d}Z"


def configure_logging(level: str = "INFO", fmt: Literal["auto", "json", "console"] | str = "auto") -> None:
    """Route structlog and stdlib logging through one redacting pipeline.

    ``fmt="auto"`` renders for humans when stderr is a terminal and JSON lines otherwise, so that
    log shippers never see ANSI colours.
    """
    if fmt == "auto":
        fmt = "console" if sys.stderr.isatty() else "json"
    numeric_level = logging.getLevelName(level.upper())
    if not isinstance(numeric_level, int):
        numeric_level = logging.INFO

    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        _extract_stdlib_args,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.processors.StackInfoRenderer(),
        # Tracebacks are rendered to text before redaction so exception messages are scrubbed too.
        structlog.processors.format_exc_info,
        structlog.processors.UnicodeDecoder(),
        redact_secrets,
    ]
    renderer: Any
    if fmt == "console":
        renderer = structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())
    else:
        renderer = structlog.processors.JSONRenderer(serializer=_orjson_text)

    structlog.configure(
        processors=[
            structlog.stdlib.filter_by_level,
            structlog.stdlib.add_logger_name,
            *shared,
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=shared,
        processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, renderer],
    )
    global _sink, _json_lines
    if _sink is None:
        _sink = LineSink()
    _json_lines = fmt != "console"
    handler = _SinkHandler(_sink)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(numeric_level)
    # Chatty third-party INFO output that says nothing an operator needs. procrastinate logs every job's start
    # and end (the stalled-job sweeper alone runs every 5 s); the run log keeps what matters of robot jobs. httpx
    # logs every request it sends, a second line beside our own ``bitrix.request`` (and the run log's record of each
    # call to your endpoints): a tenth of the worker's log work in a flood.
    for name in ("pgserver", "alembic.runtime.plugins", "procrastinate", "httpx", "httpcore"):
        logging.getLogger(name).setLevel(max(numeric_level, logging.WARNING))
    # uvicorn installs its own handlers when given a log_config; make sure its records reach ours.
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        lg = logging.getLogger(name)
        lg.handlers.clear()
        lg.propagate = True
        # An earlier uvicorn.Config(log_level=...) in the same process pins levels; ours rule now.
        lg.setLevel(logging.NOTSET)
        lg.disabled = False


def get_logger(name: str | None = None) -> Any:
    return structlog.stdlib.get_logger(name)


class _ASGIApp:
    # Starlette's Route treats a plain function as a request/response endpoint; an object with
    # ``__call__`` is mounted as a raw ASGI app, which is what prometheus_client produces.
    def __init__(self, app: Any) -> None:
        self._app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        await self._app(scope, receive, send)


def metrics_app(registry: CollectorRegistry = REGISTRY) -> Any:
    """ASGI app serving the Prometheus exposition format; metrics register on ``REGISTRY``."""
    return _ASGIApp(make_asgi_app(registry=registry))


# --- bounded label values --------------------------------------------------------------------------------------

PORTAL_LABELS = 200
OTHER = "other"
_seen_portals: set[str] = set()


def portal_label(key: str) -> str:
    """The ``portal`` label value for a portal key: itself for the first ``PORTAL_LABELS`` portals a process sees,
    ``other`` beyond, so a service for many portals keeps its metric series bounded."""
    if key in _seen_portals:
        return key
    if len(_seen_portals) < PORTAL_LABELS:
        _seen_portals.add(key)
        return key
    return OTHER
