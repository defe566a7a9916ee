"""Calls, batches, lists and errors through the client against a live sandbox portal."""

from __future__ import annotations

import asyncio

import pytest
from prometheus_client import REGISTRY

from b24bridge.bitrix import BitrixClient, Portal, WebhookAuth, errors
from b24bridge.bitrix.auth import OAuthAuth, TokenPair
from b24bridge.bitrix.errors import Retry
from tests.sandbox.conftest import LiveSandbox


def contact(i: int) -> dict[str, object]:
    return {"fields": {"NAME": f"Name{i}", "LAST_NAME": "Test", "ORIGIN_ID": f"o-{i}"}}


async def test_call_returns_result(portal: Portal) -> None:
    me = await portal.call("user.current")
    assert me["ID"] == "1"
    new_id = await portal.call("crm.contact.add", contact(1))
    assert isinstance(new_id, int)
    assert (await portal.call("crm.contact.get", {"id": new_id}))["NAME"] == "Name1"


def requests_sent(portal: Portal) -> float:
    total = 0.0
    for kind in ("call", "batch"):
        value = REGISTRY.get_sample_value(
            "b24bridge_bitrix_requests_total", {"portal": portal.key, "kind": kind, "status": "200"}
        )
        total += value or 0.0
    return total


async def test_concurrent_calls_are_packed_into_batches(portal: Portal, sandbox: LiveSandbox) -> None:
    before = requests_sent(portal)
    ids = await asyncio.gather(*(portal.call("crm.contact.add", contact(i)) for i in range(120)))
    assert len(set(ids)) == 120
    assert sandbox.call("crm.contact.list", {"select": ["ID"]}).json()["total"] == 120
    # 120 concurrent calls travel in a handful of batch requests, not 120 requests.
    assert requests_sent(portal) - before <= 8


async def test_each_caller_gets_its_own_error(portal: Portal) -> None:
    good: object
    bad: object
    good, bad = await asyncio.gather(
        portal.call("crm.contact.add", contact(1)),
        portal.call("crm.contact.get", {"id": 987654}),
        return_exceptions=True,
    )
    assert isinstance(good, int)
    assert isinstance(bad, errors.BadRequestError)
    assert bad.description == "Not found" and bad.code == "" and bad.method == "crm.contact.get"
    assert bad.retry is Retry.PERMANENT
    assert "Not found" in (bad.body or "")


async def test_error_keeps_code_status_and_raw_body(portal: Portal) -> None:
    with pytest.raises(errors.MethodNotFoundError) as caught:
        await portal.request("no.such.method")
    error = caught.value
    assert (error.code, error.status, error.method) == ("ERROR_METHOD_NOT_FOUND", 404, "no.such.method")
    assert error.body is not None and '"error_description":"Method not found!"' in error.body


async def test_scope_error_is_permanent(client: BitrixClient, sandbox: LiveSandbox) -> None:
    hook = sandbox.control("POST", "/_sandbox/webhooks", {"user_id": 1, "scopes": ["user"]})
    limited = client.portal(WebhookAuth(hook["url"]), key="limited")
    with pytest.raises(errors.AccessDeniedError) as caught:
        await limited.call("crm.contact.list")
    assert caught.value.code == "insufficient_scope" and caught.value.status == 403
    assert not caught.value.retryable


async def test_batch_with_result_reference_and_halt(portal: Portal) -> None:
    results = await portal.batch(
        {
            "add": ("crm.contact.add", contact(7)),
            "get": ("crm.contact.get", {"id": "$result[add]"}),
            "bad": ("crm.contact.get", {"id": 0}),
            "after": ("user.current", None),
        },
        halt=True,
    )
    assert results["get"].unwrap()["ORIGIN_ID"] == "o-7"
    assert isinstance(results["bad"].error, errors.BadRequestError)
    assert results["after"].error is not None  # halted: never executed
    with pytest.raises(ValueError, match="at most 50"):
        await portal.batch([("user.current", None)] * 51)


async def test_list_reads_every_page(portal: Portal) -> None:
    await asyncio.gather(*(portal.call("crm.contact.add", contact(i)) for i in range(173)))
    rows = [row async for row in portal.list("crm.contact.list", {"select": ["ID", "ORIGIN_ID"]})]
    assert len(rows) == 173
    assert len({r["ID"] for r in rows}) == 173


async def test_export_walks_by_id_without_counting(portal: Portal) -> None:
    await asyncio.gather(*(portal.call("crm.contact.add", contact(i)) for i in range(260)))
    await portal.call("crm.contact.add", {"fields": {"NAME": "Other", "LAST_NAME": "Skip"}})
    rows = [
        row async for row in portal.export("crm.contact.list", {"select": ["NAME"], "filter": {"LAST_NAME": "Test"}})
    ]
    ids = [int(r["ID"]) for r in rows]
    assert len(ids) == 260 and ids == sorted(set(ids))
    assert all(r["NAME"].startswith("Name") for r in rows)


def test_plain_http_only_for_loopback() -> None:
    WebhookAuth("http://127.0.0.1:8090/rest/1/abc/")
    with pytest.raises(errors.ConfigurationError, match="https"):
        WebhookAuth("http://portal.example.com/rest/1/abc/")
    with pytest.raises(errors.ConfigurationError):
        WebhookAuth("https://portal.example.com/rest/")
    pair = TokenPair("a" * 32, "r" * 32)
    with pytest.raises(errors.ConfigurationError):
        OAuthAuth("id", "secret", pair, "http://10.0.0.1/rest/")
    assert "a" * 32 not in repr(pair)


async def test_chain_uses_earlier_results_and_shares_requests(portal: Portal, sandbox: LiveSandbox) -> None:
    before = requests_sent(portal)

    async def chain(i: int) -> dict[str, object]:
        results = await portal.chain(
            [
                ("add", "crm.contact.add", contact(i)),
                ("get", "crm.contact.get", {"id": "$result[add]"}),
            ]
        )
        return {name: result.unwrap() for name, result in results.items()}

    found = await asyncio.gather(*(chain(i) for i in range(20)), *(portal.call("user.current") for _ in range(5)))
    chains = found[:20]
    for i, got in enumerate(chains):
        assert got["get"]["ID"] == str(got["add"]) and got["get"]["NAME"] == f"Name{i}"
    # 45 commands in at most a few requests: the chains travelled together with the plain calls.
    assert requests_sent(portal) - before <= 4


async def test_a_failing_chain_stops_itself_and_no_one_else(portal: Portal, sandbox: LiveSandbox) -> None:
    bad_then_answer = portal.chain(
        [
            ("get", "crm.contact.get", {"id": 987654}),
            ("add", "crm.contact.add", {"fields": {"NAME": "$result[get][NAME]", "LAST_NAME": "Never"}}),
        ]
    )
    good = [portal.chain([("add", "crm.contact.add", contact(i))]) for i in range(5)]
    singles = [portal.call("crm.contact.add", contact(100 + i)) for i in range(5)]
    bad, *rest = await asyncio.gather(bad_then_answer, *good, *singles)
    assert isinstance(bad["get"].error, errors.BadRequestError)
    assert isinstance(bad["add"].error, errors.NotExecutedError)  # halted: never ran
    assert all(result["add"].error is None for result in rest[:5])
    assert all(isinstance(value, int) for value in rest[5:])
    names = [c["LAST_NAME"] for c in sandbox.call("crm.contact.list", {"select": ["LAST_NAME"]}).json()["result"]]
    assert "Never" not in names and len(names) == 10


async def test_the_pools_of_every_portal_share_one_tls_context(client: BitrixClient, sandbox: LiveSandbox) -> None:
    """A pool per portal host, but one TLS context for all: each pool building its own (the CA bundle loaded again)
    held the event loop 35 ms the first time each portal was called."""
    by_address = client.portal(WebhookAuth(sandbox.webhook_url))
    by_name = client.portal(WebhookAuth(sandbox.webhook_url.replace("127.0.0.1", "localhost")))
    await asyncio.gather(by_address.call("user.current"), by_name.call("user.current"))
    pools = list(client.http._transport._pools.values())  # type: ignore[attr-defined]
    assert len(pools) == 2
    assert len({id(pool._pool._ssl_context) for pool in pools}) == 1
