"""The body-limit middleware called in-process: which cap a path gets, and the edges no real server produces on
demand."""

from __future__ import annotations

import json

import pytest
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from b24bridge import bodylimit
from b24bridge.bodylimit import BodyLimit
from tests.bodylimit.conftest import RecordingLog, make_app


def test_path_prefixes() -> None:
    limit = BodyLimit(make_app(), limits={"/install": 10, "/install/page": 20, "/": 30}, default_limit=40)
    paths = ["/install", "/install/x", "/install/page/y", "/installer", "/ok"]
    assert [limit.limit_for(path) for path in paths] == [10, 10, 20, 30, 30]
    assert BodyLimit(make_app(), limits={"/a": 1}, default_limit=40).limit_for("/b") == 40


# --- edges, called in-process -------------------------------------------------------------------------------


async def call(app: ASGIApp, headers: list[tuple[bytes, bytes]] | None = None) -> list[Message]:
    """Run one request with an empty body through ``BodyLimit(app)``; what reached the server."""
    scope = {"type": "http", "method": "POST", "path": "/x", "headers": headers or [(b"content-length", b"0")]}
    sent: list[Message] = []

    async def receive() -> Message:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: Message) -> None:
        sent.append(message)

    await BodyLimit(app)(scope, receive, send)
    return sent


async def test_an_app_that_never_answers_gets_a_json_500(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(bodylimit, "log", recording := RecordingLog())

    async def silent(scope: Scope, receive: Receive, send: Send) -> None:
        pass

    start, body = await call(silent)
    assert start["status"] == 500 and json.loads(body["body"]) == {"error": "internal error"}
    assert recording.events("error") == ["http.no_response"]


async def test_an_own_500_passes_unchanged_and_a_broken_response_is_left_to_the_server() -> None:
    async def own_500(scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": 500, "headers": []})
        await send({"type": "http.response.body", "body": b"mine", "more_body": False})

    assert [message.get("body") for message in await call(own_500)] == [None, b"mine"]

    async def breaks_midway(scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"half", "more_body": True})
        raise RuntimeError("midway")

    # Only the server can close the connection, which tells the client the answer is broken.
    with pytest.raises(RuntimeError, match="midway"):
        await call(breaks_midway)


async def test_an_unreadable_content_length_is_a_400() -> None:
    for value in [b"12, 13", "١٢".encode(), b"9" * 30]:
        start, body = await call(make_app(), [(b"content-length", value)])
        assert start["status"] == 400 and b"Content-Length" in body["body"]
    start, _ = await call(make_app(), [(b"content-length", b"1"), (b"content-length", b"2")])
    assert start["status"] == 400
