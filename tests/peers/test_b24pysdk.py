"""b24pysdk (the official Bitrix24 Python SDK) against the sandbox portal.

The SDK hard-codes ``https://{domain}/rest`` and the OAuth server ``https://oauth.bitrix24.tech``; the fixture below
points both at the sandbox (plain http on loopback) for the duration of each test. Nothing else is patched: the
SDK's own transport (``requests``, JSON POST), retry loop and token refresh run as shipped.
See docs/peers.md for what was read in its source.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Iterator
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import pytest
from b24pysdk import BitrixApp, BitrixToken, BitrixWebhook
from b24pysdk.api.callers.call_method import _MethodCaller
from b24pysdk.api.requesters.bitrix_oauth_requester import BitrixOAuthRequester
from b24pysdk.constants import DEFAULT_INITIAL_RETRY_DELAY, DEFAULT_MAX_RETRIES, DEFAULT_RETRY_DELAY_INCREMENT
from b24pysdk.errors import BitrixAPIQueryLimitExceeded
from b24pysdk.errors.oauth import BitrixOAuthInvalidGrant

from tests.livehttp import Receiver
from tests.peers.conftest import CLOUD_BURST, Hammer, PeerSandbox

AGENT = "b24-python-sdk"  # b24pysdk's User-Agent prefix (b24pysdk/_constants.py SDK_USER_AGENT)


@pytest.fixture
def sdk(peer: PeerSandbox, monkeypatch: pytest.MonkeyPatch) -> Iterator[PeerSandbox]:
    """Point b24pysdk's hard-coded https portal URL and OAuth server at the sandbox."""
    monkeypatch.setattr(_MethodCaller, "_base_url", property(lambda self: f"http://{self._domain}/rest"))
    monkeypatch.setattr(BitrixOAuthRequester, "_OAUTH_TOKEN_URL", f"{peer.base_url}/oauth/token/")
    # The OAuth server's REST (oauth.bitrix.info/rest/) is the sandbox's server_endpoint, {base}/oauth/rest/.
    monkeypatch.setattr(BitrixOAuthRequester, "_APP_INFO_URL", f"{peer.base_url}/oauth/rest/app.info/")
    yield peer


def webhook(peer: PeerSandbox) -> BitrixWebhook:
    return BitrixWebhook(domain=peer.domain, webhook_token=peer.webhook_token)


def test_retry_policy_is_what_the_source_says() -> None:
    # _base_requester._request_with_retries: DEFAULT_MAX_RETRIES attempts in all, only HTTP 503 is retried,
    # sleeping initial + (used - 1) * increment → 1 s, then 2 s; the last 503 is parsed and raised.
    assert (DEFAULT_MAX_RETRIES, DEFAULT_INITIAL_RETRY_DELAY, DEFAULT_RETRY_DELAY_INCREMENT) == (3, 1, 1)


def test_webhook_user_current_and_contact_add(sdk: PeerSandbox) -> None:
    client = webhook(sdk).get_client()

    me = client.user.current().result
    assert me["ID"] == "1"
    assert me["NAME"] == "Admin"

    new_id = client.crm.contact.add({"NAME": "Ann", "LAST_NAME": "Lee"}).result
    assert isinstance(new_id, int)
    stored = sdk.call("crm.contact.get", {"id": new_id}).json()["result"]
    assert (stored["NAME"], stored["LAST_NAME"]) == ("Ann", "Lee")

    # What went over the wire: webhook path with the SDK's ".json" suffix, JSON bodies, one request per call.
    hits = sdk.recorder.rest(agent=AGENT)
    assert [(h.method, h.status) for h in hits] == [("user.current", 200), ("crm.contact.add", 200)]
    assert all(h.path.startswith(f"/rest/{sdk.webhook_token}/") and h.path.endswith(".json") for h in hits)


def test_batch_with_result_reference(sdk: PeerSandbox) -> None:
    hook = webhook(sdk)
    response = hook.call_batch(
        {
            "add": ("crm.contact.add", {"fields": {"NAME": "Batch", "LAST_NAME": "Ref"}}),
            "get": ("crm.contact.get", {"id": "$result[add]"}),
        },
        halt=True,
    )
    result = response["result"]
    assert result["result_error"] == []
    new_id = result["result"]["add"]
    assert isinstance(new_id, int)
    assert result["result"]["get"]["ID"] == str(new_id)
    assert result["result"]["get"]["NAME"] == "Batch"
    assert [h.method for h in sdk.recorder.rest(agent=AGENT)] == ["batch"]
    assert [c["ID"] for c in sdk.contacts()] == [str(new_id)]


def test_list_of_120_contacts_through_pagination_helpers(sdk: PeerSandbox) -> None:
    created = sdk.seed_contacts(120)
    sdk.recorder.clear()
    client = webhook(sdk).get_client()

    # call_list: first page plainly, then every remaining `start` offset in one batch.
    listed = client.crm.contact.list(select=["ID", "NAME"], order={"ID": "ASC"}).as_list().result
    ids = [int(c["ID"]) for c in listed]
    assert len(ids) == 120
    assert sorted(ids) == sorted(created)
    assert len(set(ids)) == 120
    assert [h.method for h in sdk.recorder.rest(agent=AGENT)] == ["crm.contact.list", "batch"]

    # call_list_fast: keyset pagination (ORDER ID, filter >ID, start=-1), the docs' recommended bulk export.
    sdk.recorder.clear()
    fast = client.crm.contact.list(select=["ID", "NAME"]).as_list_fast().result
    fast_ids = [int(c["ID"]) for c in fast]
    assert sorted(fast_ids) == sorted(created)
    assert len(set(fast_ids)) == 120
    assert sdk.recorder.rest(agent=AGENT)


def test_oauth_expired_token_is_refreshed_through_the_sandbox_oauth_server(
    sdk: PeerSandbox, receiver: Receiver
) -> None:
    auth = sdk.install_app(receiver)
    app = BitrixApp(client_id=auth["client_id"], client_secret=auth["client_secret"])
    # No `expires` given: the SDK cannot refresh pre-emptively and must react to the portal's 401 expired_token.
    token = BitrixToken(
        domain=sdk.domain, auth_token=auth["access_token"], refresh_token=auth["refresh_token"], bitrix_app=app
    )
    client = token.get_client()
    assert client.user.current().result["ID"] == auth["user_id"]

    expired = sdk.control("POST", "/_sandbox/tokens/expire", {"client_id": auth["client_id"]})
    assert expired["expired"] == 1  # the installer's token, the only one issued so far
    sdk.recorder.clear()

    contact_id = client.crm.contact.add({"NAME": "After", "LAST_NAME": "Refresh"}).result

    assert token.auth_token != auth["access_token"]
    assert token.refresh_token != auth["refresh_token"]
    assert token.expires is not None
    stored = sdk.call("crm.contact.get", {"id": contact_id}).json()["result"]
    assert stored["NAME"] == "After"
    # expired_token (401) → GET /oauth/token/ grant_type=refresh_token → the same call again.
    hits = [(h.path, h.status) for h in sdk.recorder.hits if h.user_agent.startswith(AGENT)]
    assert [status for _, status in hits] == [401, 200, 200]
    assert hits[1][0] == "/oauth/token/"

    # The old refresh token was consumed by the refresh: the token server refuses it now.
    with pytest.raises(BitrixOAuthInvalidGrant):
        app.refresh_oauth_token(auth["refresh_token"])
    # The new one works (and rotates again).
    second = token.refresh_token
    token.refresh_and_set_oauth_token()
    assert token.refresh_token != second
    assert client.user.current().result["ID"] == auth["user_id"]


def test_oauth_authorization_code_exchange(sdk: PeerSandbox, receiver: Receiver) -> None:
    """The browser leg by hand (GET /oauth/authorize/ → 302 with ?code=), then the SDK's own code exchange."""
    auth = sdk.install_app(receiver)
    redirect = sdk.http.get("/oauth/authorize/", params={"client_id": auth["client_id"], "state": "s1"})
    assert redirect.status_code == 302
    query = dict(parse_qsl(urlsplit(redirect.headers["location"]).query))
    assert query["state"] == "s1"
    app = BitrixApp(client_id=auth["client_id"], client_secret=auth["client_secret"])

    renewed = app.get_oauth_token(query["code"])

    assert renewed.oauth_token.access_token not in (auth["access_token"], "")
    assert renewed.oauth_token.refresh_token
    assert renewed.oauth_token.expires is not None
    token = BitrixToken(
        domain=sdk.domain,
        auth_token=renewed.oauth_token.access_token,
        refresh_token=renewed.oauth_token.refresh_token,
        expires=renewed.oauth_token.expires,
        bitrix_app=app,
    )
    assert token.get_client().user.current().result["ID"] == "1"
    # The code is single-use.
    with pytest.raises(BitrixOAuthInvalidGrant):
        app.get_oauth_token(query["code"])


def _add_contacts_sequentially(client: Any, count: int, prefix: str) -> tuple[list[int], list[Exception]]:
    ids: list[int] = []
    failures: list[Exception] = []
    for i in range(count):
        try:
            ids.append(client.crm.contact.add({"NAME": f"{prefix}{i}"}).result)
        except Exception as exc:  # record what the SDK raised, the assertions decide
            failures.append(exc)
    return ids, failures


def test_at_the_cloud_limit_sequential_calls_survive_on_the_1s_backoff(sdk: PeerSandbox) -> None:
    """60 back-to-back adds: the 51st meets the full bucket; the SDK's 1 s sleep drains 2 requests' worth."""
    sdk.cloud_limits()
    client = webhook(sdk).get_client()
    count = CLOUD_BURST + 10

    started = time.monotonic()
    ids, failures = _add_contacts_sequentially(client, count, "Seq")
    elapsed = time.monotonic() - started

    hits = sdk.recorder.rest(method="crm.contact.add", agent=AGENT)
    refused = [h for h in hits if h.status == 503]
    assert failures == []
    assert len(ids) == count
    assert len([h for h in hits if h.status == 200]) == count
    assert len(refused) >= 1, "past the burst of 50 the portal must have refused something"
    assert len(hits) == count + len(refused)
    # Every refusal was answered by the first retry, 1 s later, and that retry was admitted (1 s of drain at 2/s
    # frees a slot), so the 2 s step never came into play. Lower bounds only: a loaded machine only adds delay.
    for before, after in itertools.pairwise(hits):
        if before.status == 503:
            assert after.status == 200
            assert after.at - before.at >= 0.95, after.at - before.at
    assert elapsed >= len(refused) * 0.95
    # What the portal holds: exactly one contact per successful call, nothing lost, nothing doubled.
    stored = sdk.contacts()
    assert sorted(int(c["ID"]) for c in stored) == sorted(ids)
    assert sorted(c["NAME"] for c in stored) == sorted(f"Seq{i}" for i in range(count))


def test_at_the_cloud_limit_the_sdk_gives_up_after_three_attempts(sdk: PeerSandbox) -> None:
    """Another app on the same IP keeps the shared bucket full: 503, +1 s 503, +2 s 503, then the SDK raises."""
    sdk.cloud_limits()
    sdk.fill_bucket()
    client = webhook(sdk).get_client()
    sdk.recorder.clear()

    with Hammer(sdk) as hammer:
        started = time.monotonic()
        with pytest.raises(BitrixAPIQueryLimitExceeded) as raised:
            client.crm.contact.add({"NAME": "Never"}).result  # noqa: B018 - .result sends the request
        elapsed = time.monotonic() - started

    assert raised.value.json_response["error"] == "QUERY_LIMIT_EXCEEDED"
    assert hammer.sent > 0
    hits = sdk.recorder.rest(agent=AGENT)
    assert [(h.method, h.status) for h in hits] == [("crm.contact.add", 503)] * DEFAULT_MAX_RETRIES
    gaps = [later.at - earlier.at for earlier, later in itertools.pairwise(hits)]
    assert 0.95 <= gaps[0] < 1.9, gaps
    assert 1.95 <= gaps[1] < 3.5, gaps
    assert 2.9 <= elapsed < 6.0
    assert sdk.contacts() == []  # a refused request never reaches the method


def test_oauth_server_app_info(sdk: PeerSandbox, receiver: Receiver) -> None:
    auth = sdk.install_app(receiver)
    app = BitrixApp(client_id=auth["client_id"], client_secret=auth["client_secret"])
    token = BitrixToken(domain=sdk.domain, auth_token=auth["access_token"], bitrix_app=app)
    info = token.get_app_info().result
    assert info.client_id == auth["client_id"]
    assert info.install.installed is True
    assert str(info.user_id) == auth["user_id"]
    assert (info.install.member_id, info.install.domain) == (auth["member_id"], sdk.domain)
    assert info.scope == ["crm", "user"]
