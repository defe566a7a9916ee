"""What operators see of the client: one log line per HTTP request without secrets, Prometheus metrics,
and a renamed portal followed for good."""

from __future__ import annotations

import contextlib
import io
import json
import logging

from prometheus_client import REGISTRY
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from b24bridge.bitrix import BitrixClient, WebhookAuth, errors
from b24bridge.observability import configure_logging
from tests.livehttp import LiveServer
from tests.sandbox.conftest import LiveSandbox


async def test_one_redacted_log_line_per_request(sandbox: LiveSandbox) -> None:
    stream = io.StringIO()
    configure_logging("INFO", "json")
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logging.getLogger().handlers[0].formatter)
    logging.getLogger().addHandler(handler)
    try:
        async with BitrixClient() as client:
            portal = client.portal(WebhookAuth(sandbox.webhook_url), key="logged")
            await portal.call("user.current")
            await portal.batch({"a": ("user.current", None), "b": ("profile", None)})
    finally:
        logging.getLogger().removeHandler(handler)
    lines = [json.loads(line) for line in stream.getvalue().splitlines() if "bitrix.request" in line]
    assert [(entry["method"], entry["commands"], entry["status"]) for entry in lines] == [
        ("user.current", 1, 200),
        ("batch", 2, 200),
    ]
    assert all(entry["portal"] == "logged" and entry["duration_ms"] >= 0 for entry in lines)
    code = sandbox.webhook_url.rstrip("/").rsplit("/", 1)[-1]
    assert code not in stream.getvalue()


async def test_metrics_count_requests_calls_and_batches(sandbox: LiveSandbox) -> None:
    def sample(name: str, **labels: str) -> float:
        return REGISTRY.get_sample_value(name, {"portal": "metered", **labels}) or 0.0

    async with BitrixClient() as client:
        portal = client.portal(WebhookAuth(sandbox.webhook_url), key="metered")
        await portal.call("user.current")
        with contextlib.suppress(errors.BadRequestError):
            await portal.call("crm.contact.get", {"id": 424242})
    assert sample("b24bridge_bitrix_calls_total", method="user.current", outcome="ok") == 1
    assert sample("b24bridge_bitrix_calls_total", method="crm.contact.get", outcome="permanent") == 1
    assert sample("b24bridge_bitrix_requests_total", kind="call", status="200") >= 1
    assert sample("b24bridge_bitrix_batch_size_count") == 2
    assert sample("b24bridge_bitrix_limiter_wait_seconds_count") == 2


async def test_renamed_portal_is_followed_and_reported(sandbox: LiveSandbox) -> None:
    target = sandbox.base_url.split("://", 1)[1]

    async def moved(request: Request) -> Response:
        return Response(status_code=302, headers={"Location": f"http://{target}{request.url.path}"})

    old = LiveServer(lambda port: Starlette(routes=[Route("/{path:path}", moved, methods=["GET", "POST"])]))
    try:
        hook_path = sandbox.webhook_url.split(target, 1)[1]
        changes: list[str] = []

        async def on_change(domain: str) -> None:
            changes.append(domain)

        async with BitrixClient() as client:
            auth = WebhookAuth(f"{old.base_url}{hook_path}")
            portal = client.portal(auth, key="renamed", on_domain_change=on_change)
            created = await portal.call("crm.contact.add", {"fields": {"NAME": "Moved"}})
            assert (await portal.call("crm.contact.get", {"id": created}))["NAME"] == "Moved"
        assert changes == [target]
        assert auth.domain == target
    finally:
        old.stop()
