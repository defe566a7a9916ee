"""Connections from the registry: refreshed tokens saved encrypted at once, lost authorisation recorded."""

from __future__ import annotations

import pytest

from b24bridge.bitrix import BitrixClient
from b24bridge.bitrix.errors import AuthLostError
from b24bridge.portals import crypto
from b24bridge.portals.schemas import PortalUnavailableError
from b24bridge.portals.service import PortalRegistry
from tests.portals.conftest import KEY, Bridge, dump_text, rows


def _stored(bridge: Bridge) -> tuple[str, str]:
    [row] = rows(bridge.database_url, "SELECT * FROM portals")
    ring = crypto.Keyring(tuple(crypto.parse_keys(KEY)))
    return (
        ring.decrypt(row["access_token_enc"], f"{row['member_id']}:access"),
        ring.decrypt(row["refresh_token_enc"], f"{row['member_id']}:refresh"),
    )


async def test_refreshed_tokens_are_persisted_encrypted(bridge: Bridge) -> None:
    bridge.install()
    bridge.wait_bound()
    member_id = bridge.sandbox.portal.world.member_id
    bridge.stop()  # one service context per process: the test's own from here on
    old_access, old_refresh = _stored(bridge)
    counters = bridge.sandbox.control("GET", "/_sandbox/")["counters"]
    async with bridge.services() as services:
        portal = await services.portals.connect(member_id)
        assert await services.portals.connect(member_id) is portal  # cached per process
        assert (await portal.call("profile"))["ID"]
        bridge.sandbox.control("POST", "/_sandbox/tokens/expire", {"client_id": bridge.app["client_id"]})
        assert (await portal.call("profile"))["ID"]
        new_access, new_refresh = _stored(bridge)
        assert new_access != old_access and new_refresh != old_refresh
        assert portal.auth.tokens.access_token == new_access  # type: ignore[union-attr]
        dump = dump_text(bridge.database_url)
        for secret in (old_access, old_refresh, new_access, new_refresh):
            assert secret not in dump
        # Expire again: the refresh uses the newest refresh token, never the rotated-out one.
        bridge.sandbox.control("POST", "/_sandbox/tokens/expire", {"client_id": bridge.app["client_id"]})
        assert (await portal.call("profile"))["ID"]
    after = bridge.sandbox.control("GET", "/_sandbox/")["counters"]
    refreshes = after.get("oauth_requests:refresh_token", 0) - counters.get("oauth_requests:refresh_token", 0)
    assert refreshes == 2
    assert not any(k.startswith("oauth_refused:") for k in after)
    kinds = [r["kind"] for r in rows(bridge.database_url, "SELECT kind FROM portal_events ORDER BY id")]
    assert kinds == ["installed", "tokens_refreshed", "tokens_refreshed"]


async def test_refresh_by_another_process_is_picked_up(bridge: Bridge) -> None:
    bridge.install()
    bridge.wait_bound()
    member_id = bridge.sandbox.portal.world.member_id
    bridge.stop()
    async with bridge.services() as services:
        portal_a = await services.portals.connect(member_id)
        # A second process: its own Bitrix client and registry, hence its own connection to the same portal.
        async with BitrixClient() as other_client:
            other = PortalRegistry(services.database.pool, services.keys, other_client, services.portals.app)
            portal_b = await other.connect(member_id)
            assert portal_b is not portal_a
            bridge.sandbox.control("POST", "/_sandbox/tokens/expire", {"client_id": bridge.app["client_id"]})
            await portal_b.call("profile")  # B refreshes and stores the pair
        before = bridge.sandbox.control("GET", "/_sandbox/")["counters"].get("oauth_requests:refresh_token", 0)
        await portal_a.call("profile")  # A's token is expired: it loads B's pair instead of refreshing again
        after = bridge.sandbox.control("GET", "/_sandbox/")["counters"].get("oauth_requests:refresh_token", 0)
        assert after == before
        assert portal_a.auth.tokens.access_token == _stored(bridge)[0]  # type: ignore[union-attr]


async def test_lost_authorisation_marks_the_portal(bridge: Bridge) -> None:
    bridge.install()
    bridge.wait_bound()
    member_id = bridge.sandbox.portal.world.member_id
    bridge.stop()
    async with bridge.services() as services:
        portal = await services.portals.connect(member_id)
        # Far beyond the refresh token's lifetime: the OAuth server answers invalid_grant.
        bridge.sandbox.control("POST", "/_sandbox/clock", {"advance": 400 * 86400})
        with pytest.raises(AuthLostError):
            await portal.call("profile")
        [row] = rows(bridge.database_url, "SELECT status FROM portals")
        assert row["status"] == "auth_lost"
        counters = bridge.sandbox.control("GET", "/_sandbox/")["counters"]
        with pytest.raises(AuthLostError):  # fails fast, nothing sent
            await portal.call("profile")
        assert bridge.sandbox.control("GET", "/_sandbox/")["counters"] == counters
        with pytest.raises(PortalUnavailableError, match="lost its authorisation"):
            await services.portals.connect(member_id)
        assert await services.portals.verify_application_token(member_id, "anything") is None
    kinds = [r["kind"] for r in rows(bridge.database_url, "SELECT kind FROM portal_events ORDER BY id")]
    assert kinds == ["installed", "auth_lost"]


async def test_registry_queries(bridge: Bridge) -> None:
    auth = bridge.install()["install_call"]["payload"]["auth"]
    bridge.wait_bound()
    bridge.stop()
    async with bridge.services() as services:
        registry = services.portals
        member_id = auth["member_id"]
        record = await registry.get(member_id)
        assert record is not None and record.status == "active" and record.limits.burst == 50
        assert [p.member_id for p in await registry.list_portals("active")] == [member_id]
        assert await registry.list_portals("uninstalled") == []
        assert await registry.get("nobody") is None
        assert await registry.verify_application_token(member_id, auth["application_token"]) == record
        assert await registry.verify_application_token(member_id, auth["application_token"] + "x") is None
        assert await registry.verify_application_token("nobody", auth["application_token"]) is None
        with pytest.raises(PortalUnavailableError, match="not installed"):
            await registry.connect("nobody")
