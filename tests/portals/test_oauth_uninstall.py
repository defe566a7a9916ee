"""The OAuth authorization-code flow with a signed state; uninstallation proven by the application token."""

from __future__ import annotations

import time
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx

from b24bridge.portals import crypto
from tests.portals.conftest import KEY, Bridge, rows


def _oauth_bridge(bridge_factory: Any) -> Bridge:
    # A UI app without an install page: the portal installs it at once, b24bridge learns of it by the OAuth flow.
    bridge: Bridge = bridge_factory(api_only=False, install_url="")
    assert bridge.install()["install_call"] is None
    return bridge


def test_oauth_flow_installs_the_portal(bridge_factory: Any) -> None:
    bridge = _oauth_bridge(bridge_factory)
    domain = bridge.sandbox.portal.domain
    start = bridge.http.get("/oauth/start", params={"domain": domain})
    assert start.status_code == 302
    location = start.headers["location"]
    parts = urlsplit(location)
    assert f"{parts.scheme}://{parts.netloc}" == bridge.sandbox.base_url and parts.path == "/oauth/authorize/"
    assert parse_qs(parts.query)["client_id"] == [bridge.app["client_id"]]
    authorize = httpx.get(location)  # the administrator's browser at the portal
    assert authorize.status_code == 302, authorize.text
    callback = authorize.headers["location"]
    assert callback.startswith(f"{bridge.base_url}/oauth/callback?")
    page = httpx.get(callback)
    assert page.status_code == 200, page.text
    assert "installed" in page.text
    [row] = rows(bridge.database_url, "SELECT * FROM portals")
    assert row["member_id"] == bridge.sandbox.portal.world.member_id
    assert row["status"] == "active" and row["access_token_enc"].startswith("k1:")
    assert row["application_token_hash"] is None  # the code flow does not carry it (REFERENCE 4.4)
    kinds = [r["kind"] for r in rows(bridge.database_url, "SELECT kind, detail FROM portal_events")]
    assert kinds == ["installed"]
    # The code is single-use: replaying the callback fails cleanly and changes nothing.
    again = httpx.get(callback)
    assert again.status_code == 401
    assert len(rows(bridge.database_url, "SELECT * FROM portal_events")) == 1


def test_oauth_start_checks_the_domain(bridge_factory: Any) -> None:
    bridge = _oauth_bridge(bridge_factory)
    remote = bridge.http.get("/oauth/start", params={"domain": "portal.bitrix24.com"})
    assert remote.status_code == 302
    assert remote.headers["location"].startswith("https://portal.bitrix24.com/oauth/authorize/?client_id=")
    for bad in ("", "portal.bitrix24.com/evil", "user@portal.bitrix24.com", "portal:99999"):
        assert bridge.http.get("/oauth/start", params={"domain": bad}).status_code == 400, bad


def test_tampered_expired_or_foreign_state_is_rejected(bridge_factory: Any) -> None:
    bridge = _oauth_bridge(bridge_factory)
    domain = bridge.sandbox.portal.domain
    location = bridge.http.get("/oauth/start", params={"domain": domain}).headers["location"]
    callback = httpx.get(location).headers["location"]
    query = {k: v[0] for k, v in parse_qs(urlsplit(callback).query).items()}
    ring = crypto.Keyring(tuple(crypto.parse_keys(KEY)))

    payload, _, mac = query["state"].partition(".")
    other = crypto.make_state(ring, "other.bitrix24.com", time.time())
    cases = {
        "tampered mac": f"{payload}.{mac[:-1]}{'0' if mac[-1] != '0' else '1'}",
        "swapped payload": f"{other.partition('.')[0]}.{mac}",
        "expired": crypto.make_state(ring, domain, time.time() - crypto.STATE_TTL - 1),
        "other key": crypto.make_state(
            crypto.Keyring(tuple(crypto.parse_keys("k1:" + crypto.new_key()))), domain, time.time()
        ),
        "other portal": other,
        "missing": "",
    }
    for name, state in cases.items():
        answer = bridge.http.get("/oauth/callback", params={**query, "state": state})
        assert answer.status_code == 400, name
    assert rows(bridge.database_url, "SELECT * FROM portals") == []
    # The untouched state still works (the code was not spent by the refused attempts).
    assert bridge.http.get("/oauth/callback", params=query).status_code == 200


def test_uninstall_needs_the_application_token(bridge: Bridge) -> None:
    result = bridge.install()
    bridge.wait_bound()
    auth = result["install_call"]["payload"]["auth"]
    wrong = {
        "event": "ONAPPUNINSTALL",
        "data[CLEAN]": "1",
        "auth[member_id]": auth["member_id"],
        "auth[domain]": auth["domain"],
        "auth[application_token]": "not-the-token",
    }
    assert bridge.http.post("/events", data=wrong).status_code == 401
    assert bridge.http.post("/events", data={**wrong, "auth[application_token]": ""}).status_code == 401
    assert bridge.http.post("/events", data={**wrong, "auth[member_id]": "nobody"}).status_code == 401
    [row] = rows(bridge.database_url, "SELECT * FROM portals")
    assert row["status"] == "active" and row["access_token_enc"]

    # The portal itself uninstalls: ONAPPUNINSTALL goes to the handler bound after installation.
    done = bridge.sandbox.control("POST", f"/_sandbox/apps/{bridge.app['client_id']}/uninstall", {"clean": True})
    assert [c["status"] for c in done["calls"]] == [200], done["calls"]
    [row] = rows(bridge.database_url, "SELECT * FROM portals")
    assert row["status"] == "uninstalled" and row["uninstalled_at"] is not None
    assert row["access_token_enc"] is None and row["refresh_token_enc"] is None
    assert row["application_token_hash"] is None
    kinds = [r["kind"] for r in rows(bridge.database_url, "SELECT kind FROM portal_events ORDER BY id")]
    assert kinds == ["installed", "uninstalled"]
    # A replayed uninstall (or any event) for an uninstalled portal is not accepted.
    replay = {**wrong, "auth[application_token]": auth["application_token"]}
    assert bridge.http.post("/events", data=replay).status_code == 401
    # Installing again brings it back on the same row.
    assert bridge.install()["install_call"]["status"] == 200
    [row] = rows(bridge.database_url, "SELECT * FROM portals")
    assert row["status"] == "active" and row["uninstalled_at"] is None


def test_other_events_are_checked_and_acknowledged(bridge: Bridge) -> None:
    auth = bridge.install()["install_call"]["payload"]["auth"]
    event = {"event": "ONCRMDEALADD", "auth[member_id]": auth["member_id"]}
    assert bridge.http.post("/events", data={**event, "auth[application_token]": "x"}).status_code == 401
    ok = bridge.http.post("/events", data={**event, "auth[application_token]": auth["application_token"]})
    assert ok.status_code == 200 and ok.json()["status"] == "ignored"
