from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterator
from typing import Any

import pytest
import structlog

from b24bridge.observability import (
    configure_logging,
    flush_logs,
    is_secret_key,
    redact,
    redact_secrets,
    redact_text,
    write_json_line,
)

SECRET = "s3cr3tV4lue"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("GET /oauth?code=s3cr3tV4lue&state=x HTTP/1.1", "GET /oauth?code=***&state=x HTTP/1.1"),
        ("/install?auth=s3cr3tV4lue&domain=a.bitrix24.ru", "/install?auth=***&domain=a.bitrix24.ru"),
        ("access_token=s3cr3tV4lue&expires_in=3600", "access_token=***&expires_in=3600"),
        ("x=1&refresh_token=s3cr3tV4lue", "x=1&refresh_token=***"),
        ("client_id=app.1&client_secret=s3cr3tV4lue&grant_type=x", "client_id=app.1&client_secret=***&grant_type=x"),
        ("event=ONAPPINSTALL&application_token=s3cr3tV4lue", "event=ONAPPINSTALL&application_token=***"),
        (
            "event=ONCRMDEALADD&data[FIELDS][ID]=5&auth[access_token]=s3cr3tV4lue&auth[domain]=a.bitrix24.ru",
            "event=ONCRMDEALADD&data[FIELDS][ID]=5&auth[access_token]=***&auth[domain]=a.bitrix24.ru",
        ),
        (
            "auth%5Baccess_token%5D=s3cr3tV4lue&auth%5Bmember_id%5D=m1",
            "auth%5Baccess_token%5D=***&auth%5Bmember_id%5D=m1",
        ),
        ("auth[application_token]=s3cr3tV4lue", "auth[application_token]=***"),
        ("AUTH_ID=s3cr3tV4lue&REFRESH_ID=s3cr3tV4lue&PLACEMENT=x", "AUTH_ID=***&REFRESH_ID=***&PLACEMENT=x"),
        (
            '{"access_token": "s3cr3tV4lue", "expires_in": 3600, "refresh_token":"a\\"b"}',
            '{"access_token": "***", "expires_in": 3600, "refresh_token":"***"}',
        ),
        (
            '{"auth": {"application_token": "s3cr3tV4lue", "domain": "d"}}',
            '{"auth": {"application_token": "***", "domain": "d"}}',
        ),
        ("{'client_secret': 's3cr3tV4lue', 'client_id': 'app.1'}", "{'client_secret': '***', 'client_id': 'app.1'}"),
        (
            "POST https://b24-x.bitrix24.ru/rest/1/s3cr3tV4lue/crm.deal.list.json?start=0",
            "POST https://b24-x.bitrix24.ru/rest/1/***/crm.deal.list.json?start=0",
        ),
        ("https://portal.example/rest/17/s3cr3tV4lue/", "https://portal.example/rest/17/***/"),
        ("connect postgresql://app:s3cr3tV4lue@db:5432/b24 failed", "connect postgresql://app:***@db:5432/b24 failed"),
        ("Authorization: Bearer s3cr3tV4lue", "Authorization: Bearer ***"),
        (
            "redirect_uri=https%3A%2F%2Fapp%2Fcb%3Fcode%3Ds3cr3tV4lue%26state%3D1",
            "redirect_uri=https%3A%2F%2Fapp%2Fcb%3Fcode%3D***%26state%3D1",
        ),
    ],
)
def test_redact_text_shapes(text: str, expected: str) -> None:
    assert redact_text(text) == expected
    assert SECRET not in redact_text(text)


@pytest.mark.parametrize(
    "text",
    [
        "",
        "plain message about auth flows, codes and tokens",
        "HTTP status code=200; status_code=500",
        "GET /rest/crm.deal.list?start=50&order[ID]=desc",
        "https://b24-x.bitrix24.ru/rest/crm.deal.get.json?id=1",
        "/rest/1/",
        '{"domain": "b24-x.bitrix24.ru", "member_id": "abc", "expires_in": 3600}',
        "auth[domain]=b24-x.bitrix24.ru&auth[member_id]=m1",
        "retrying in 2.5s (attempt 3/5) error=QUERY_LIMIT_EXCEEDED",
        "postgresql://app@db:5432/b24",
    ],
)
def test_non_secret_text_untouched(text: str) -> None:
    assert redact_text(text) == text


def test_redact_text_is_idempotent() -> None:
    once = redact_text("https://x/rest/1/abc/m?auth=tok&code=c")
    assert redact_text(once) == once


@pytest.mark.parametrize(
    ("key", "secret"),
    [
        ("access_token", True),
        ("ACCESS_TOKEN", True),
        ("Refresh_Token", True),
        ("application_token", True),
        ("APPLICATION_TOKEN", True),
        ("client_secret", True),
        ("AUTH_ID", True),
        ("REFRESH_ID", True),
        ("auth", True),
        ("password", True),
        ("db_password", True),
        ("code", True),
        ("event_token", True),
        ("auth[access_token]", True),
        ("auth%5Brefresh_token%5D", True),
        ("auth[domain]", False),
        ("status_code", False),
        ("member_id", False),
        ("domain", False),
        ("event", False),
        ("token_type", False),
    ],
)
def test_secret_key_names(key: str, secret: bool) -> None:
    assert is_secret_key(key) is secret


def test_redact_secrets_processor_nested() -> None:
    event: dict[str, Any] = {
        "event": f"called https://p/rest/3/{SECRET}/user.get",
        "access_token": SECRET,
        "APPLICATION_TOKEN": SECRET,
        "status_code": 401,
        "payload": {
            "event": "ONCRMDEALUPDATE",
            "auth": {"access_token": SECRET, "domain": "p.bitrix24.ru", "member_id": "m1"},
            "data": {"FIELDS": {"ID": "5"}},
        },
        "attempts": [{"refresh_token": SECRET}, f"code={SECRET}", 3],
        "pair": ("client_secret", {"client_secret": SECRET}),
        "auth": SECRET,
        "code": SECRET,
    }
    out = redact_secrets(None, "info", event)
    assert SECRET not in json.dumps(out)
    assert out["status_code"] == 401
    assert out["payload"]["auth"]["domain"] == "p.bitrix24.ru"
    assert out["payload"]["auth"]["member_id"] == "m1"
    assert out["payload"]["data"] == {"FIELDS": {"ID": "5"}}
    assert out["event"] == "called https://p/rest/3/***/user.get"
    assert out["attempts"][2] == 3


def test_redact_leaves_plain_values() -> None:
    value = {"id": 5, "name": "Deal", "tags": ["a", "b"], "ok": True, "none": None}
    assert redact(value) == value


@pytest.fixture
def json_logging() -> Iterator[None]:
    configure_logging("DEBUG", "json")
    yield
    structlog.reset_defaults()
    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
    root.setLevel(logging.WARNING)


def _lines(captured: str) -> list[dict[str, Any]]:
    assert "Logging error" not in captured, captured
    return [json.loads(line) for line in captured.splitlines() if line.strip()]


def test_structlog_json_lines_are_redacted(json_logging: None, capsys: pytest.CaptureFixture[str]) -> None:
    log = structlog.stdlib.get_logger("b24bridge.test")
    log.info("token refreshed", refresh_token=SECRET, url=f"https://p/oauth/token/?refresh_token={SECRET}", n=1)
    flush_logs()  # lines are written by the log's own thread
    records = _lines(capsys.readouterr().err)
    assert len(records) == 1
    record = records[0]
    assert record["event"] == "token refreshed"
    assert record["level"] == "info"
    assert record["n"] == 1
    assert SECRET not in json.dumps(record)


def test_stdlib_and_uvicorn_logs_are_redacted(json_logging: None, capsys: pytest.CaptureFixture[str]) -> None:
    logging.getLogger("uvicorn.access").info(
        '%s - "%s %s HTTP/%s" %d', "127.0.0.1:5000", "GET", f"/app/install?AUTH_ID={SECRET}&x=1", "1.1", 200
    )
    try:
        raise RuntimeError(f"POST https://p/rest/1/{SECRET}/crm.deal.add failed")
    except RuntimeError:
        logging.getLogger("some.library").exception("call failed")
    flush_logs()
    records = _lines(capsys.readouterr().err)
    assert [r["logger"] for r in records] == ["uvicorn.access", "some.library"]
    assert "AUTH_ID=***&x=1" in records[0]["event"]
    assert "RuntimeError" in records[1]["exception"]
    assert SECRET not in capsys.readouterr().err + json.dumps(records)


def test_the_access_log_line_is_json_redacted_and_its_own_renderer_agrees(
    json_logging: None, capsys: pytest.CaptureFixture[str]
) -> None:
    """The access log renders its line itself (orjson, not structlog's processors): same keys, same redaction."""
    write_json_line("b24bridge.http", "http.request", {"path": "/bridge/hooks/r", "query": f"secret={SECRET}&deal=1"})
    structlog.stdlib.get_logger("b24bridge.http").info("http.request", path="/x", query=f"secret={SECRET}")
    flush_logs()
    own, structlogs = _lines(capsys.readouterr().err)
    assert own["query"] == "secret=***&deal=1" and SECRET not in json.dumps(own)
    assert set(own) == set(structlogs) and own["timestamp"].endswith("Z") and len(own["timestamp"]) == 27


def test_a_stuck_log_reader_drops_lines_instead_of_blocking() -> None:
    import threading

    from b24bridge.logsink import DROPPED, LineSink

    gate = threading.Event()

    class Stuck:
        def write(self, text: str) -> None:
            gate.wait(5)

        def flush(self) -> None:
            pass

    sink = LineSink(lambda: Stuck(), max_queued=10)  # type: ignore[arg-type, return-value]
    dropped = DROPPED._value.get()
    started = time.perf_counter()
    for number in range(1000):
        sink.write(f"line {number}\n")
    assert time.perf_counter() - started < 0.5  # never waited for the reader
    assert DROPPED._value.get() - dropped >= 900
    gate.set()
    sink.close()
