"""The body-limit middleware in front of a real uvicorn on loopback, spoken to over raw sockets: the caps, the read
timeout, the JSON 500 and what happens to a kept-alive connection."""

from __future__ import annotations

import time

import pytest

from tests.bodylimit.conftest import (
    KIB,
    MIB,
    READ_TIMEOUT,
    Connection,
    Errors,
    RecordingLog,
    Seen,
    chunked,
    head,
    pairs,
    post,
)


@pytest.mark.parametrize("path", ["/robots/send_sms", "/install"])
def test_content_length_over_the_cap_is_refused_before_reading(port: int, seen: Seen, path: str) -> None:
    with Connection(port) as conn:
        started = time.monotonic()
        conn.sock.sendall(head("POST", path, "Content-Length: 52428800", "Expect: 100-continue"))
        answer = conn.answer()
        assert time.monotonic() - started < 1.0
        assert answer.status == 413  # not "100 Continue": the body is never asked for
        assert answer.headers["content-type"] == "application/json"
        assert answer.headers["connection"] == "close"
        assert "larger than" in answer.json()["error"]
        assert conn.closed_by_server()
    assert seen.calls == []


def test_install_cap_is_smaller_than_the_robot_cap(port: int, seen: Seen) -> None:
    body = b"a=" + b"x" * (100 * KIB)
    with Connection(port) as conn:
        conn.sock.sendall(post("/robots/x", body))
        assert conn.answer().json() == {"fields": 1}
        conn.sock.sendall(post("/install", body))
        assert conn.answer().status == 413


def test_chunked_body_over_the_cap_is_cut_off(port: int, seen: Seen, logs: tuple[RecordingLog, Errors]) -> None:
    with Connection(port) as conn:
        conn.sock.sendall(head("POST", "/stream", "Transfer-Encoding: chunked"))
        sent = conn.stream(chunked(pairs(200 * MIB, 16 * KIB)), 200 * MIB)
        answer = conn.answer()
        assert answer.status == 413
        assert answer.headers["connection"] == "close"
        assert conn.closed_by_server()
    assert sent < 20 * MIB  # the server stopped reading soon after the cap
    assert seen.calls == ["/stream"]
    assert max(seen.streamed, default=0) <= 64 * KIB  # uvicorn may hand over more at once: then it saw nothing
    recording, errors = logs
    assert errors.records == []
    assert "http.body_refused" in recording.events("info")


def test_slow_sender_gets_408_within_the_timeout(port: int, seen: Seen) -> None:
    with Connection(port) as conn:
        conn.sock.sendall(post("/robots/x", b"a=" + b"x" * 998)[:-900])  # 100 of 1000 bytes, then silence
        started = time.monotonic()
        answer = conn.answer()
        elapsed = time.monotonic() - started
        assert answer.status == 408
        assert answer.headers["connection"] == "close"
        assert answer.headers["content-type"] == "application/json"
        assert READ_TIMEOUT * 0.9 < elapsed < READ_TIMEOUT + 1.5
        assert conn.closed_by_server()


@pytest.mark.parametrize(
    "request_bytes",
    [post("/boom", b"a=1"), head("GET", "/boom"), head("GET", "/raw/boom")],
    ids=["starlette-post", "starlette-get", "raw-asgi"],
)
def test_500_keeps_the_connection_usable(port: int, logs: tuple[RecordingLog, Errors], request_bytes: bytes) -> None:
    recording, errors = logs
    with Connection(port) as conn:
        conn.sock.sendall(request_bytes)
        answer = conn.answer()
        assert answer.status == 500
        assert answer.json() == {"error": "internal error"}
        assert answer.headers["content-type"] == "application/json"
        assert answer.headers.get("connection") != "close"
        conn.sock.sendall(head("GET", "/ok"))  # the same kept-alive connection
        assert conn.answer().json() == {"ok": True}
    assert recording.events("error") == ["http.unhandled_error"]
    assert isinstance(recording.records[0][2]["exc_info"], RuntimeError)
    assert errors.records == []  # logged once: uvicorn never saw the exception


def test_aborted_upload_is_a_debug_line(port: int, seen: Seen, logs: tuple[RecordingLog, Errors]) -> None:
    recording, errors = logs
    for _ in range(20):
        with Connection(port) as conn:
            conn.sock.sendall(post("/robots/x", b"a=" + b"x" * 99_998)[:-90_000])
            time.sleep(0.01)
    deadline = time.monotonic() + 3
    while len(recording.events("debug")) < 20 and time.monotonic() < deadline:
        time.sleep(0.02)
    assert recording.events("debug") == ["http.client_disconnected"] * 20
    assert recording.events("error") == []
    assert errors.records == []


def test_body_read_to_the_end_keeps_alive_and_an_unread_one_closes(port: int) -> None:
    with Connection(port) as conn:
        for _ in range(3):
            conn.sock.sendall(post("/robots/x", b"a[b][]=1&a[b][]=2"))
            answer = conn.answer()
            assert answer.json() == {"fields": 1}
            assert "connection" not in answer.headers
        # /ok never reads the body it was sent: the answer closes rather than leave the body to be drained.
        conn.sock.sendall(head("GET", "/ok", "Content-Length: 5000") + b"x" * 10)
        answer = conn.answer()
        assert answer.status == 200 and answer.headers["connection"] == "close"
