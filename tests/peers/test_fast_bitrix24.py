"""fast_bitrix24 against the sandbox portal.

The library takes the webhook URL as given (http:// is fine; ``ssl`` only matters for https), POSTs JSON with
aiohttp, wraps every ``call()`` in a ``batch``, throttles itself with a client-side leaky bucket (50, 2/s) and
retries 5xx with a failure counter shared by everything in flight. It has no OAuth client of its own: a
``token_func`` coroutine supplies tokens and is awaited again after any 401. See docs/peers.md.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest
from fast_bitrix24 import Bitrix, BitrixAsync

from tests.livehttp import Receiver
from tests.peers.conftest import CLOUD_BURST, PeerSandbox

AGENT = "aiohttp"  # fast_bitrix24 sends aiohttp's default User-Agent

# Every test here uses its own event loop through the library's own sync wrapper or ``asyncio.run`` in a thread,
# never pytest's loop: the sync ``Bitrix`` picks whatever loop is current, and a running one would make it return
# a Task instead of a result.


def run_async(coro_factory: Any) -> Any:
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(lambda: asyncio.run(coro_factory())).result(timeout=120)


def run_sync(fn: Any) -> Any:
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(fn).result(timeout=120)


def test_webhook_calls_with_the_sync_client(peer: PeerSandbox) -> None:
    def scenario() -> tuple[Any, Any, Any]:
        b = Bitrix(peer.webhook_url, verbose=False)
        me = b.call("user.current", raw=True)
        new_id = b.call("crm.contact.add", {"fields": {"NAME": "Ann", "LAST_NAME": "Lee"}})
        users = b.get_all("user.get")
        return me, new_id, users

    me, new_id, users = run_sync(scenario)

    assert me["result"]["ID"] == "1"
    assert isinstance(new_id, int)
    stored = peer.call("crm.contact.get", {"id": new_id}).json()["result"]
    assert (stored["NAME"], stored["LAST_NAME"]) == ("Ann", "Lee")
    assert sorted(u["ID"] for u in users) == ["1", "2"]
    # raw=True sends the method itself; a plain call() always travels inside a batch.
    hits = peer.recorder.rest(agent=AGENT)
    assert [(h.method, h.status) for h in hits] == [("user.current", 200), ("batch", 200), ("user.get", 200)]


def test_call_with_a_list_of_items_is_sent_as_batches_of_50(peer: PeerSandbox) -> None:
    items = [{"fields": {"NAME": f"Bulk{i}", "LAST_NAME": "Peer"}} for i in range(60)]

    async def scenario() -> Any:
        return await BitrixAsync(peer.webhook_url, verbose=False).call("crm.contact.add", items)

    ids = run_async(scenario)

    assert isinstance(ids, tuple)
    assert len(ids) == 60
    assert len(set(ids)) == 60
    assert [h.method for h in peer.recorder.rest(agent=AGENT)] == ["batch", "batch"]
    stored = {int(c["ID"]): c["NAME"] for c in peer.contacts()}
    assert set(stored) == set(ids)
    assert sorted(stored.values()) == sorted(f"Bulk{i}" for i in range(60))


def test_call_batch_with_result_reference(peer: PeerSandbox) -> None:
    async def scenario() -> Any:
        b = BitrixAsync(peer.webhook_url, verbose=False)
        return await b.call_batch(
            {
                "halt": 1,
                "cmd": {
                    "add": "crm.contact.add?fields[NAME]=Ref&fields[LAST_NAME]=Batch",
                    "get": "crm.contact.get?id=$result[add]",
                },
            }
        )

    result = run_async(scenario)

    new_id = result["add"]
    assert isinstance(new_id, int)
    assert result["get"]["ID"] == str(new_id)
    assert result["get"]["NAME"] == "Ref"
    assert [h.method for h in peer.recorder.rest(agent=AGENT)] == ["batch"]
    assert [c["ID"] for c in peer.contacts()] == [str(new_id)]


def test_get_all_of_120_contacts(peer: PeerSandbox) -> None:
    created = peer.seed_contacts(120)
    peer.recorder.clear()

    async def scenario() -> Any:
        return await BitrixAsync(peer.webhook_url, verbose=False).get_all(
            "crm.contact.list", {"select": ["ID", "NAME"]}
        )

    listed = run_async(scenario)

    ids = [int(c["ID"]) for c in listed]
    assert len(ids) == 120
    assert len(set(ids)) == 120
    assert sorted(ids) == sorted(created)
    # First page plainly (it learns `total`), then start=50 and start=100 together in one batch.
    assert [h.method for h in peer.recorder.rest(agent=AGENT)] == ["crm.contact.list", "batch"]


def test_oauth_refresh_is_left_to_token_func(peer: PeerSandbox, receiver: Receiver) -> None:
    """No built-in refresh: on a 401 the library awaits ``token_func`` again and repeats the call."""
    auth = peer.install_app(receiver)
    issued = {"access": auth["access_token"], "refresh": auth["refresh_token"]}
    token_calls: list[str] = []

    async def token_func() -> str:
        if not token_calls:
            token_calls.append("initial")
            return issued["access"]
        token_calls.append("refresh")
        async with httpx.AsyncClient(timeout=10) as http:
            reply = await http.get(
                f"{peer.base_url}/oauth/token/",
                params={
                    "grant_type": "refresh_token",
                    "client_id": auth["client_id"],
                    "client_secret": auth["client_secret"],
                    "refresh_token": issued["refresh"],
                },
            )
        body = reply.json()
        issued.update(access=body["access_token"], refresh=body["refresh_token"])
        return str(body["access_token"])

    async def scenario() -> tuple[Any, Any]:
        b = BitrixAsync(auth["client_endpoint"], token_func=token_func, verbose=False)
        before = await b.call("user.current", raw=True)
        peer.control("POST", "/_sandbox/tokens/expire", {"client_id": auth["client_id"]})
        after = await b.call("crm.contact.add", {"fields": {"NAME": "After", "LAST_NAME": "Refresh"}})
        return before, after

    before, contact_id = run_async(scenario)

    assert before["result"]["ID"] == auth["user_id"]
    assert token_calls == ["initial", "refresh"]
    assert issued["access"] != auth["access_token"]
    assert peer.call("crm.contact.get", {"id": contact_id}).json()["result"]["NAME"] == "After"
    hits = [(h.path, h.method, h.status) for h in peer.recorder.hits if h.user_agent.startswith("Python")]
    assert hits == [
        ("/rest/user.current", "user.current", 200),
        ("/rest/batch", "batch", 401),  # expired_token
        ("/rest/batch", "batch", 200),  # the same batch with the refreshed token
    ]


def test_any_401_makes_it_ask_token_func_again_without_limit(peer: PeerSandbox) -> None:
    """FINDING: a token the portal rejects (invalid_token, not expired) is retried for as long as token_func answers."""
    calls = 0

    async def token_func() -> str:
        nonlocal calls
        calls += 1
        if calls > 5:
            raise RuntimeError("token_func gives up")  # the library itself never would
        return "0" * 32

    async def scenario() -> Any:
        b = BitrixAsync(f"{peer.base_url}/rest/", token_func=token_func, verbose=False)
        return await b.call("user.current", raw=True)

    with pytest.raises(RuntimeError, match="token_func gives up"):
        run_async(scenario)
    hits = peer.recorder.rest(agent=AGENT)
    assert [(h.method, h.status) for h in hits] == [("user.current", 401)] * 5


def test_respect_velocity_policy_false_crashes_on_cloud_timing(peer: PeerSandbox) -> None:
    """FINDING: with respect_velocity_policy=False any non-batch answer carrying ``time.operating`` (every cloud
    answer does) raises KeyError(method) in ServerRequestHandler.add_throttler_records after the call succeeded."""
    peer.cloud_limits()

    async def scenario() -> Any:
        b = BitrixAsync(peer.webhook_url, verbose=False, respect_velocity_policy=False)
        return await b.call("user.current", raw=True)

    with pytest.raises(KeyError, match=r"user\.current"):
        run_async(scenario)
    assert [(h.method, h.status) for h in peer.recorder.rest(agent=AGENT)] == [("user.current", 200)]


def test_one_sync_client_shared_by_threads_breaks(peer: PeerSandbox) -> None:
    """FINDING (limits off): the sync ``Bitrix`` runs each call in its own event loop per thread but keeps ONE aiohttp
    session; 4 threads × 5 adds on one instance → many calls raise RuntimeError (session of another loop)."""
    b = Bitrix(peer.webhook_url, verbose=False)

    def work(w: int) -> list[tuple[str, Any]]:
        out: list[tuple[str, Any]] = []
        for i in range(5):
            name = f"T{w}-{i}"
            try:
                out.append((name, b.call("crm.contact.add", {"fields": {"NAME": name}})))
            except RuntimeError as exc:
                out.append((name, exc))
        return out

    with ThreadPoolExecutor(4) as pool:
        results = [pair for chunk in pool.map(work, range(4), timeout=120) for pair in chunk]

    failed = {name for name, value in results if isinstance(value, RuntimeError)}
    returned = {name: value for name, value in results if not isinstance(value, RuntimeError)}
    assert failed, f"observed behaviour: calls from other threads fail; got {results}"
    stored = {c["NAME"]: int(c["ID"]) for c in peer.contacts()}
    # Whatever returned an ID was created exactly once. A call that raised may still have been executed (the error
    # can come after the answer, e.g. "Event loop is closed"): the caller cannot tell.
    assert {name: stored.get(name) for name in returned} == returned, results
    assert set(stored) - set(returned) <= failed
    assert len([h for h in peer.recorder.rest(agent=AGENT) if h.status == 200]) == len(stored)


# --- at the rate limit (faithful cloud values: burst 50, drain 2/s) --------------------------------------------


def test_sequential_calls_stay_under_the_limit_thanks_to_the_client_side_bucket(peer: PeerSandbox) -> None:
    """Its own leaky bucket (50, 2/s) mirrors the portal's: one caller in sequence never meets a 503."""
    peer.cloud_limits()
    count = CLOUD_BURST + 10

    async def scenario() -> list[Any]:
        b = BitrixAsync(peer.webhook_url, verbose=False)
        return [await b.call("crm.contact.add", {"fields": {"NAME": f"Seq{i}"}}) for i in range(count)]

    started = time.monotonic()
    ids = run_async(scenario)
    elapsed = time.monotonic() - started

    hits = peer.recorder.rest(agent=AGENT)
    assert [h.status for h in hits] == [200] * count
    assert None not in ids
    # The 10 requests past the burst were spaced 0.5 s apart by the client, not by the portal.
    spacing = [later.at - earlier.at for earlier, later in itertools.pairwise(hits[CLOUD_BURST - 1 :])]
    assert all(gap >= 0.45 for gap in spacing), spacing
    assert elapsed >= (count - CLOUD_BURST) * 0.45
    stored = {int(c["ID"]): c["NAME"] for c in peer.contacts()}
    assert set(stored) == set(ids)
    assert sorted(stored.values()) == sorted(f"Seq{i}" for i in range(count))


def test_concurrent_callers_get_none_without_anything_being_sent(peer: PeerSandbox) -> None:
    """FINDING: 5 workers sharing one client, 12 adds each. The client bucket lets all 5 through at once (it records a
    request only after its answer), the portal answers 503, the shared failure counter cuts the concurrency limit
    to 1, and a call() that starts while another request is in flight returns None and sends nothing."""
    peer.cloud_limits()
    workers, per_worker = 5, 12

    async def scenario() -> list[tuple[str, Any]]:
        b = BitrixAsync(peer.webhook_url, verbose=False)

        async def worker(w: int) -> list[tuple[str, Any]]:
            out = []
            for i in range(per_worker):
                name = f"W{w}-{i}"
                out.append((name, await b.call("crm.contact.add", {"fields": {"NAME": name}})))
            return out

        done = await asyncio.gather(*(worker(w) for w in range(workers)))
        return [pair for chunk in done for pair in chunk]

    results = run_async(scenario)

    assert len(results) == workers * per_worker
    returned_none = {name for name, value in results if value is None}
    returned_id = {name: value for name, value in results if value is not None}
    hits = peer.recorder.rest(agent=AGENT)
    accepted = [h for h in hits if h.status == 200]
    refused = [h for h in hits if h.status == 503]
    stored = {c["NAME"]: int(c["ID"]) for c in peer.contacts()}

    assert refused, "concurrent callers should have run into the portal's limit"
    assert returned_none, "observed behaviour: some calls silently return None"
    # The Nones were never sent: the portal accepted exactly one batch per returned ID and holds exactly those.
    assert len(accepted) == len(returned_id)
    assert stored == returned_id
    assert returned_none.isdisjoint(stored)
    assert len(returned_none) + len(stored) == workers * per_worker


def test_concurrent_burst_into_a_full_bucket_gives_up_at_once(peer: PeerSandbox) -> None:
    """FINDING: 20 concurrent adds while another client has used the burst. The retry counter is shared, so after
    11 refusals in total every call that fails again raises 'All attempts ... exhausted' (most after ONE 503)."""
    peer.cloud_limits()
    peer.fill_bucket()
    peer.recorder.clear()
    count = 20

    async def scenario() -> list[tuple[str, Any, float]]:
        b = BitrixAsync(peer.webhook_url, verbose=False)
        started = time.monotonic()

        async def one(i: int) -> tuple[str, Any, float]:
            name = f"Burst{i}"
            try:
                return name, await b.call("crm.contact.add", {"fields": {"NAME": name}}), time.monotonic() - started
            except RuntimeError as exc:
                return name, exc, time.monotonic() - started

        return list(await asyncio.gather(*(one(i) for i in range(count))))

    results = run_async(scenario)

    gave_up = [(name, exc, at) for name, exc, at in results if isinstance(exc, RuntimeError)]
    succeeded = {name: value for name, value, _ in results if not isinstance(value, RuntimeError)}
    assert all("All attempts to get data from server exhausted" in str(exc) for _, exc, _ in gave_up)
    # All 20 first attempts met the full bucket; failures 11..20 raised on the spot, without any back-off.
    assert len(gave_up) >= count - 10
    assert sorted(at for _, _, at in gave_up)[count - 11] < 1.0
    hits = peer.recorder.rest(agent=AGENT)
    refused = [h for h in hits if h.status == 503]
    accepted = [h for h in hits if h.status == 200]
    assert len(refused) >= count
    assert len(refused) < len(gave_up) * 11, "far fewer attempts than MAX_RETRIES=10 per abandoned call"
    assert None not in succeeded.values()
    assert len(accepted) == len(succeeded)
    stored = {c["NAME"]: int(c["ID"]) for c in peer.contacts()}
    assert stored == succeeded
