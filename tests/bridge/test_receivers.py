"""HTTPS endpoints as targets: route file forms, the address policy, signatures as the spec's package checks them,
and what each answer means, against a real server on loopback."""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from standardwebhooks import Webhook
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from b24bridge.bitrix import CallRecord
from b24bridge.bridge.receivers import (
    AddressPolicy,
    Receiver,
    ReceiverClient,
    ReceiverError,
    endpoint_key,
    message_id,
    parse_networks,
    signature_headers,
)
from b24bridge.bridge.schemas import BridgeConfigError
from tests.bridge.conftest import load, problems
from tests.livehttp import LiveServer, serve

SECRET = "whsec_" + base64.b64encode(b"s" * 32).decode()
OLD = "whsec_" + base64.b64encode(b"t" * 32).decode()

ROUTES = f"""\
portals:
  partner: {{webhook: "https://partner.bitrix24.com/rest/1/abcdefgh12345678/"}}
  erp: {{endpoint: "https://erp.example.com/b24?tenant=7", secret: "{SECRET}"}}
routes:
  r1:
    source: partner
    target: erp
    triggers: {{hook: {{secret: hook-secret-0123456789}}}}
    deal:
      TITLE: "{{{{ deal.TITLE }}}}"
"""


def test_an_endpoint_target_reads_with_its_secrets_kept_out_of_reprs() -> None:
    routes = load(ROUTES)
    erp = routes.portals["erp"]
    assert erp.endpoint == "https://erp.example.com/b24?tenant=7" and erp.secrets == (SECRET,)
    assert not erp.is_portal and routes.portals["partner"].is_portal
    assert SECRET not in repr(erp) and "tenant" not in repr(erp)
    assert endpoint_key(erp.endpoint) == "https://erp.example.com/b24"
    two = ROUTES.replace(f'secret: "{SECRET}"', f'secrets: ["{SECRET}", "{OLD}"]')
    assert load(two).portals["erp"].secrets == (SECRET, OLD)


def test_endpoint_problems_are_named_and_never_quote_a_secret() -> None:
    bad = ROUTES.replace(f'secret: "{SECRET}"', 'secret: "whsec_c2hvcnQ="').replace(
        "https://erp.example.com/b24?tenant=7", "ftp://user:pw@erp.example.com/"
    )
    found = problems(bad)
    assert found == [
        "routes.yaml:3: portals.erp.endpoint: not an https URL; allowed: https://<your system>/<path> "
        "(http only to networks B24BRIDGE_ENDPOINT_ALLOW_NETWORKS lists)",
        "routes.yaml:3: portals.erp.secret: a secret must be 24 to 64 bytes; allowed: whsec_ and 24 to 64 bytes in "
        "base64",
    ]
    assert problems(ROUTES.replace(f', secret: "{SECRET}"', "")) == [
        "routes.yaml:3: portals.erp: needs exactly one of secret and secrets; allowed: secret: whsec_..."
    ]
    three = ROUTES.replace(f'secret: "{SECRET}"', f'secrets: ["{SECRET}", "{OLD}", "{SECRET}"]')
    assert problems(three) == ["routes.yaml:3: portals.erp.secrets: not one or two secrets; allowed: [new, old]"]


def test_what_only_a_portal_target_has_is_refused_on_a_route_to_an_endpoint() -> None:
    text = (
        ROUTES.replace("    source: partner\n    target: erp\n", "    source: erp\n    target: erp\n")
        + "      ASSIGNED_BY_ID: {user: ASSIGNED_BY_ID}\n"
        + "    contact: {match: [phone], fields: {NAME: {from: NAME}}}\n"
        + "    status_back: {stages: {WON: WON}}\n"
    )
    assert problems(text) == [
        "routes.yaml:6: routes.r1.source: an endpoint is no source; allowed: a portal (app: or webhook:) as the source",
        "routes.yaml:13: routes.r1.status_back.stages: an endpoint has no stages; allowed: fields: only",
        "routes.yaml:12: routes.r1.contact.match: an endpoint matches its own records; allowed: fields: only",
        "routes.yaml:11: routes.r1.deal.ASSIGNED_BY_ID: users are matched between two portals only; allowed: copy the"
        " user id, or from: ...EMAIL",
    ]


async def _resolved(*addresses: str) -> Any:
    async def resolve(host: str, port: int) -> list[tuple[Any, ...]]:
        return [(0, 0, 0, "", (address, port)) for address in addresses]

    return resolve


async def test_private_addresses_are_refused_unless_listed_and_plain_http_only_to_listed_ones() -> None:
    public = AddressPolicy((), resolve=await _resolved("93.184.216.34"))
    await public.check("https://erp.example.com/hook")
    for address in ("10.1.2.3", "127.0.0.1", "169.254.169.254", "192.168.0.5", "::1", "fd00::1"):
        policy = AddressPolicy((), resolve=await _resolved("93.184.216.34", address))
        with pytest.raises(BridgeConfigError, match=f"resolves to {address}, a non-public address"):
            await policy.check("https://erp.example.com/hook")
    listed = AddressPolicy(parse_networks("10.0.0.0/8, 127.0.0.1"), resolve=await _resolved("10.1.2.3"))
    await listed.check("https://erp.internal/hook")
    await listed.check("http://erp.internal/hook")
    with pytest.raises(BridgeConfigError, match="plain http only to"):
        await public.check("http://erp.example.com/hook")
    with pytest.raises(BridgeConfigError, match=r"resolves to 127\.0\.0\.2"):
        await listed.check("https://127.0.0.2/hook")


def test_two_secrets_sign_at_once_and_either_verifies_as_the_spec_package_checks() -> None:
    body = b'{"record":{"TITLE":"x"}}'
    now = dt.datetime.now(dt.UTC)
    msg = message_id("member", "r1", 42)
    assert msg == message_id("member", "r1", 42) != message_id("member", "r1", 43)
    headers = signature_headers((SECRET, OLD), msg, body, now)
    assert headers["webhook-id"] == msg and len(headers["webhook-signature"].split(" ")) == 2
    assert Webhook(SECRET).verify(body, headers) == {"record": {"TITLE": "x"}}
    assert Webhook(OLD).verify(body, headers) == {"record": {"TITLE": "x"}}
    with pytest.raises(Exception, match="No matching signature"):
        Webhook(SECRET).verify(body + b" ", headers)


@pytest.fixture
def answering() -> Iterator[tuple[LiveServer, dict[str, Any]]]:
    """A server answering each POST as ``plan`` says: ``(status, body, delay)``."""
    plan: dict[str, Any] = {"status": 200, "body": b'{"id": "SO-1"}', "delay": 0.0, "seen": []}

    async def answer(request: Request) -> Response:
        plan["seen"].append((dict(request.headers), await request.body()))
        await asyncio.sleep(plan["delay"])
        return Response(plan["body"], status_code=plan["status"], headers={"location": "https://elsewhere/"})

    server = LiveServer(lambda _port: Starlette(routes=[Route("/hook", answer, methods=["POST"])]))
    for live in serve(server):
        yield live, plan


async def test_each_answer_means_what_the_docs_say(answering: tuple[LiveServer, dict[str, Any]]) -> None:
    live, plan = answering
    calls: list[CallRecord] = []

    async def observe(call: CallRecord) -> None:
        calls.append(call)

    receiver = Receiver("erp", f"{live.base_url}/hook", (SECRET,))
    async with httpx.AsyncClient(timeout=httpx.Timeout(0.5)) as http:
        client = ReceiverClient(http, AddressPolicy(parse_networks("127.0.0.1")))
        answer = await client.post(receiver, "msg_1", {"record": {"TITLE": "x"}}, observe)
        assert answer.id == "SO-1" and calls[-1].outcome == "ok" and calls[-1].method == "POST erp"
        headers, body = plan["seen"][-1]
        assert Webhook(SECRET).verify(body, headers) == {"record": {"TITLE": "x"}}
        for status, body, retryable, uncertain, wanted in [
            (204, b"", None, None, None),
            (200, b'{"id": 17}', None, None, "17"),
            (200, b"not json", None, None, None),
            (200, b'{"id": true}', None, None, None),
            (503, b"busy", True, True, "endpoint erp answered 503: busy"),
            (429, b"", True, False, "endpoint erp answered 429"),
            (400, b'{"error": "TITLE missing"}', False, False, 'endpoint erp answered 400: {"error": "TITLE missing"}'),
            (301, b"", False, False, "endpoint erp answered 301"),
        ]:
            plan["status"], plan["body"] = status, body
            if retryable is None:
                assert (await client.post(receiver, "msg_1", {}, observe)).id == wanted
                continue
            with pytest.raises(ReceiverError) as caught:
                await client.post(receiver, "msg_1", {}, observe)
            assert (str(caught.value), caught.value.retryable, caught.value.uncertain) == (wanted, retryable, uncertain)
        plan["status"], plan["delay"] = 200, 1.0
        with pytest.raises(ReceiverError) as caught:
            await client.post(receiver, "msg_1", {}, observe)
        assert caught.value.retryable and caught.value.uncertain
        assert calls[-1].error is not None and calls[-1].outcome in ("uncertain",)
        plan["delay"], plan["body"] = 0.0, b"x" * (1024 * 1024)
        assert (await client.post(receiver, "msg_1", {}, observe)).id is None  # a huge answer is read only so far
