"""OAuth connections: single-flight refresh, rotation, persistence before use, lost authorisation."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from b24bridge.bitrix import BatchSettings, BitrixClient, Limits, OAuthAuth, TokenPair, errors
from b24bridge.bitrix.auth import RefreshLock
from b24bridge.bitrix.redis_state import RedisRefreshLock
from tests.sandbox.conftest import LiveSandbox


def install(sandbox: LiveSandbox) -> dict[str, Any]:
    installed = sandbox.control("POST", f"/_sandbox/apps/{sandbox.client_id}/install", {})
    tokens: dict[str, Any] = installed["tokens"]
    return tokens


def oauth(sandbox: LiveSandbox, tokens: dict[str, Any]) -> OAuthAuth:
    return OAuthAuth(
        sandbox.client_id,
        sandbox.client_secret,
        TokenPair.from_answer(tokens),
        tokens["client_endpoint"],
        oauth_server=sandbox.base_url,
    )


def counter(sandbox: LiveSandbox, name: str) -> int:
    return int(sandbox.control("GET", "/_sandbox/")["counters"].get(name, 0))


class Store:
    """Stands in for the portal registry: what was persisted, and when."""

    def __init__(self) -> None:
        self.saved: list[TokenPair] = []
        self.adopted_before_save: list[bool] = []
        self.auth: OAuthAuth | None = None

    async def save(self, pair: TokenPair) -> None:
        assert self.auth is not None
        # Persisted before use: the connection still holds the old token while we store the new one.
        self.adopted_before_save.append(self.auth.tokens.access_token == pair.access_token)
        await asyncio.sleep(0.01)
        self.saved.append(pair)

    async def load(self) -> TokenPair | None:
        return self.saved[-1] if self.saved else None


@pytest.mark.parametrize("batching", [False, True], ids=["direct", "auto-batched"])
async def test_refresh_storm_sends_one_refresh(sandbox: LiveSandbox, batching: bool) -> None:
    tokens = install(sandbox)
    store = Store()
    async with BitrixClient(batching=BatchSettings(enabled=batching)) as client:
        store.auth = oauth(sandbox, tokens)
        # The sandbox runs without limits here; the client need not pace 200 separate requests.
        unpaced = Limits(burst=10_000, drain=10_000.0)
        portal = client.portal(store.auth, key="storm", on_tokens=store.save, limits=unpaced)
        assert (await portal.call("user.current"))["ID"] == "1"
        sandbox.control("POST", "/_sandbox/tokens/expire", {"client_id": sandbox.client_id})
        results = await asyncio.gather(*(portal.call("profile") for _ in range(200)))
    assert all(r["ID"] == "1" for r in results)
    assert counter(sandbox, "oauth_requests:refresh_token") == 1
    assert len(store.saved) == 1 and store.adopted_before_save == [False]
    assert store.auth.tokens.access_token == store.saved[0].access_token


async def test_rotation_never_reuses_an_old_refresh_token(sandbox: LiveSandbox) -> None:
    tokens = install(sandbox)
    store = Store()
    async with BitrixClient() as client:
        store.auth = oauth(sandbox, tokens)
        portal = client.portal(store.auth, key="rotation", on_tokens=store.save)
        seen_refresh_tokens = {store.auth.tokens.refresh_token}
        for _ in range(3):
            sandbox.control("POST", "/_sandbox/tokens/expire", {"client_id": sandbox.client_id})
            await portal.call("user.current")
            seen_refresh_tokens.add(store.auth.tokens.refresh_token)
    assert counter(sandbox, "oauth_requests:refresh_token") == 3
    assert counter(sandbox, "oauth_refused:refresh_token:invalid_grant") == 0
    assert len(seen_refresh_tokens) == 4  # each refresh rotated it


async def test_lost_authorisation_fails_fast(sandbox: LiveSandbox) -> None:
    tokens = install(sandbox)
    async with BitrixClient() as client:
        portal = client.portal(oauth(sandbox, tokens), key="lost")
        # Uninstalling revokes every token of the app: the refresh token is dead.
        sandbox.control("POST", f"/_sandbox/apps/{sandbox.client_id}/uninstall", {"clean": False})
        with pytest.raises(errors.AuthenticationError):
            await portal.call("user.current")  # the access token itself is gone too: invalid_token
        fresh = install(sandbox)
        # Someone else refreshes with that pair (rotation kills its refresh token), then the access token expires.
        refreshed = sandbox.http.get(
            "/oauth/token/",
            params={
                "grant_type": "refresh_token",
                "client_id": sandbox.client_id,
                "client_secret": sandbox.client_secret,
                "refresh_token": fresh["refresh_token"],
            },
        )
        assert refreshed.status_code == 200
        sandbox.control("POST", "/_sandbox/tokens/expire", {"client_id": sandbox.client_id})
        portal2 = client.portal(oauth(sandbox, fresh), key="lost2")
        with pytest.raises(errors.AuthLostError) as caught:
            await portal2.call("user.current")
        assert caught.value.code == "invalid_grant"
        before = counter(sandbox, "oauth_requests:refresh_token")
        with pytest.raises(errors.AuthLostError):
            await portal2.call("user.current")
        assert counter(sandbox, "oauth_requests:refresh_token") == before  # no loop, no second try


@pytest.mark.redis
async def test_refresh_is_single_flight_across_processes(sandbox: LiveSandbox, redis_url: str) -> None:
    """Two clients that share only Redis and the token store (as two processes would) refresh once."""
    from redis.asyncio import Redis

    redis_a, redis_b = Redis.from_url(redis_url), Redis.from_url(redis_url)
    try:
        lock_a, lock_b = RedisRefreshLock(redis_a, prefix="t-oauth"), RedisRefreshLock(redis_b, prefix="t-oauth")
        await assert_one_refresh_between(sandbox, lock_a, lock_b, calls=50)
    finally:
        await redis_a.aclose()
        await redis_b.aclose()


async def assert_one_refresh_between(
    sandbox: LiveSandbox, lock_a: RefreshLock, lock_b: RefreshLock, calls: int
) -> None:
    """Two clients, one on each lock, sharing the token store (as two processes would): their access token expires,
    ``calls`` calls each need it at once, and the OAuth server sees one refresh, whose pair both end up using."""
    tokens = install(sandbox)
    store = Store()
    async with BitrixClient(refresh_lock=lock_a) as a, BitrixClient(refresh_lock=lock_b) as b:
        store.auth = auth_a = oauth(sandbox, tokens)
        auth_b = oauth(sandbox, tokens)
        portal_a = a.portal(auth_a, key="shared", on_tokens=store.save, load_tokens=store.load)
        portal_b = b.portal(auth_b, key="shared", on_tokens=store.save, load_tokens=store.load)
        sandbox.control("POST", "/_sandbox/tokens/expire", {"client_id": sandbox.client_id})
        await asyncio.gather(
            *(portal_a.call("profile") for _ in range(calls)), *(portal_b.call("profile") for _ in range(calls))
        )
    assert counter(sandbox, "oauth_requests:refresh_token") == 1
    assert auth_a.tokens.access_token == auth_b.tokens.access_token == store.saved[-1].access_token


class SlowStore(Store):
    """A token store whose writes take a while to commit, as a database's may under load."""

    async def save(self, pair: TokenPair) -> None:
        await asyncio.sleep(0.3)
        self.saved.append(pair)


async def test_a_refresh_token_spent_by_another_process_is_not_a_lost_portal(sandbox: LiveSandbox) -> None:
    """Two processes that share the token store but no lock (a lock that failed, a misconfiguration) refresh at
    once: the OAuth server refuses the second, whose refresh token the first has just spent. The second must find
    the first's pair in the store, not declare the portal lost, which only a re-installation undoes."""
    tokens = install(sandbox)
    store = SlowStore()
    store.saved.append(TokenPair.from_answer(tokens))
    lost: list[errors.AuthLostError] = []

    async def on_lost(exc: errors.AuthLostError) -> None:
        lost.append(exc)

    async with BitrixClient() as a, BitrixClient() as b:
        auth_a, auth_b = oauth(sandbox, tokens), oauth(sandbox, tokens)
        options: dict[str, Any] = {"on_tokens": store.save, "load_tokens": store.load, "on_auth_lost": on_lost}
        portal_a = a.portal(auth_a, key="shared", **options)
        portal_b = b.portal(auth_b, key="shared", **options)
        sandbox.control("POST", "/_sandbox/tokens/expire", {"client_id": sandbox.client_id})
        await asyncio.gather(portal_a.call("profile"), portal_b.call("profile"))
    assert lost == []
    # Both refreshed at the server (the second was refused), and both use the pair the first saved.
    assert counter(sandbox, "oauth_requests:refresh_token") == 2
    assert auth_a.tokens.refresh_token == auth_b.tokens.refresh_token == store.saved[-1].refresh_token
