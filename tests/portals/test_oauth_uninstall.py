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


def _authorised(bridge: Bridge, browser: httpx.Client) -> str:
    """The callback URL the portal sends ``browser`` back to, after /oauth/start and the portal's authorisation."""
    start = browser.get(f"{bridge.base_url}/oauth/start", params={"domain": bridge.sandbox.portal.domain})
    assert start.status_code == 302, start.text
    authorize = httpx.get(start.headers["location"])  # the portal's page (it sees no cookie of ours)
    assert authorize.status_code == 302, authorize.text
    return str(authorize.headers["location"])


def test_oauth_flow_installs_the_portal(bridge_factory: Any) -> None:
    bridge = _oauth_bridge(bridge_factory)
    with httpx.Client() as browser:
        start = browser.get(f"{bridge.base_url}/oauth/start", params={"domain": bridge.sandbox.portal.domain})
        assert start.status_code == 302
        parts = urlsplit(start.headers["location"])
        assert f"{parts.scheme}://{parts.netloc}" == bridge.sandbox.base_url and parts.path == "/oauth/authorize/"
        assert parse_qs(parts.query)["client_id"] == [bridge.app["client_id"]]
        cookie = start.headers["set-cookie"].lower()
        assert "httponly" in cookie and "samesite=lax" in cookie and "path=/oauth" in cookie
        callback = str(httpx.get(start.headers["location"]).headers["location"])
        assert callback.startswith(f"{bridge.base_url}/oauth/callback?")
        page = browser.get(callback, headers={"Accept": "text/html"})
        assert page.status_code == 200, page.text
        assert "installed" in page.text
        assert crypto_cookie(browser) is None  # the flow's cookie is spent
    [row] = rows(bridge.database_url, "SELECT * FROM portals")
    assert row["member_id"] == bridge.sandbox.portal.world.member_id
    assert row["status"] == "active" and row["access_token_enc"].startswith("k1:")
    assert row["application_token_hash"] is None  # the code flow does not carry it (REFERENCE 4.4)
    kinds = [r["kind"] for r in rows(bridge.database_url, "SELECT kind, detail FROM portal_events")]
    assert kinds == ["installed"]


def crypto_cookie(browser: httpx.Client) -> str | None:
    return browser.cookies.get("b24bridge_oauth")


def test_oauth_state_is_single_use_and_bound_to_the_browser(bridge_factory: Any) -> None:
    bridge = _oauth_bridge(bridge_factory)
    with httpx.Client() as browser, httpx.Client() as other_browser:
        callback = _authorised(bridge, browser)
        secret = crypto_cookie(browser)
        # Another browser (no cookie, or the cookie of a flow of its own) cannot use this state.
        assert other_browser.get(callback).status_code == 400
        _authorised(bridge, other_browser)
        assert other_browser.get(callback).status_code == 400
        assert rows(bridge.database_url, "SELECT * FROM portals") == []
        # The browser that started it can, once.
        assert browser.get(callback).status_code == 200
        # Replayed, with the old cookie put back and a fresh code for the same state: refused, nothing changes.
        browser.cookies.set("b24bridge_oauth", str(secret), domain="127.0.0.1", path="/oauth")
        state = parse_qs(urlsplit(callback).query)["state"][0]
        authorize = {"client_id": bridge.app["client_id"], "state": state}
        fresh_code = httpx.get(f"{bridge.sandbox.base_url}/oauth/authorize/", params=authorize)
        assert fresh_code.headers["location"] != callback
        again = browser.get(str(fresh_code.headers["location"]))
        assert again.status_code == 400 and "already used" in again.json()["error"]
    assert len(rows(bridge.database_url, "SELECT * FROM portal_events")) == 1


def test_oauth_start_sends_browsers_to_portals_only(bridge_factory: Any) -> None:
    bridge = _oauth_bridge(bridge_factory)
    remote = bridge.http.get("/oauth/start", params={"domain": "http://portal.bitrix24.com"})
    assert remote.status_code == 302
    assert remote.headers["location"].startswith("https://portal.bitrix24.com/oauth/authorize/?client_id=")
    refused = [
        "",
        "portal.bitrix24.com/evil",
        "user@portal.bitrix24.com",
        "portal:99999",
        "169.254.169.254",
        "evil.example.com",
        "bitrix24.com",
        "portal.bitrix24.com.evil.example.com",
        "portal.bitrix24.com:8443",
        "portal.bitrix24.com%00.evil",
    ]
    for bad in refused:
        answer = bridge.http.get("/oauth/start", params={"domain": bad})
        assert answer.status_code == 400, bad
        assert answer.headers["content-type"] == "application/json" and "location" not in answer.headers
    # A loopback portal (the sandbox) over plain http in development only.
    assert bridge.http.get("/oauth/start", params={"domain": "127.0.0.1:9"}).headers["location"].startswith("http://")


def test_tampered_expired_or_foreign_state_is_rejected(bridge_factory: Any) -> None:
    bridge = _oauth_bridge(bridge_factory)
    domain = bridge.sandbox.portal.domain
    with httpx.Client() as browser:
        callback = _authorised(bridge, browser)
        secret = str(crypto_cookie(browser))
        query = {k: v[0] for k, v in parse_qs(urlsplit(callback).query).items()}
        ring = crypto.Keyring(tuple(crypto.parse_keys(KEY)))

        payload, _, mac = query["state"].partition(".")
        other = crypto.make_state(ring, "other.bitrix24.com", time.time(), secret)
        cases = {
            "tampered mac": f"{payload}.{mac[:-1]}{'0' if mac[-1] != '0' else '1'}",
            "swapped payload": f"{other.partition('.')[0]}.{mac}",
            "expired": crypto.make_state(ring, domain, time.time() - crypto.STATE_TTL - 1, secret),
            "other key": crypto.make_state(
                crypto.Keyring(tuple(crypto.parse_keys("k1:" + crypto.new_key()))), domain, time.time(), secret
            ),
            "other portal": other,
            "other browser": crypto.make_state(ring, domain, time.time(), "another browser's secret"),
            "missing": "",
        }
        for name, state in cases.items():
            answer = browser.get(f"{bridge.base_url}/oauth/callback", params={**query, "state": state})
            assert answer.status_code == 400, name
        assert rows(bridge.database_url, "SELECT * FROM portals") == []
        # The untouched state still works (the code was not spent by the refused attempts).
        assert browser.get(callback).status_code == 200


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
