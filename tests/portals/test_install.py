"""Installation through the ONAPPINSTALL event and the frame page, re-installation, refused installs."""

from __future__ import annotations

import json
from typing import Any

import httpx
import structlog

from b24bridge.portals import crypto
from tests.portals.conftest import KEY, Bridge, dump_text, rows


def _install_payload(result: dict[str, Any]) -> dict[str, Any]:
    payload: dict[str, Any] = result["install_call"]["payload"]
    return payload


def test_install_event_stores_portal_with_encrypted_tokens(bridge: Bridge) -> None:
    with structlog.testing.capture_logs() as logs:
        result = bridge.install()
        bridge.wait_bound()
    call = result["install_call"]
    assert call["status"] == 200, call
    auth = _install_payload(result)["auth"]
    [row] = rows(bridge.database_url, "SELECT * FROM portals")
    assert row["member_id"] == auth["member_id"]
    assert row["domain"] == bridge.sandbox.portal.domain
    assert row["status"] == "active"
    assert row["app_version"] == 1
    assert row["access_token_enc"].startswith("k1:") and row["refresh_token_enc"].startswith("k1:")
    assert row["application_token_hash"].startswith("k1:")

    # The stored pair is the one the OAuth server gave when the install was confirmed; it decrypts to working tokens.
    ring = crypto.Keyring(tuple(crypto.parse_keys(KEY)))
    stored_access = ring.decrypt(row["access_token_enc"], f"{row['member_id']}:access")
    stored_refresh = ring.decrypt(row["refresh_token_enc"], f"{row['member_id']}:refresh")
    answer = httpx.post(f"{row['client_endpoint']}profile", json={"auth": stored_access})
    assert answer.status_code == 200, answer.text

    secrets = [auth["access_token"], auth["refresh_token"], auth["application_token"], stored_access, stored_refresh]
    dump = dump_text(bridge.database_url)
    assert row["member_id"] in dump  # the dump is real
    for secret in secrets:
        assert secret not in dump
    logged = repr(logs)
    assert any(entry["event"] == "portal installed" for entry in logs)
    for secret in secrets:
        assert secret not in logged
    kinds = [r["kind"] for r in rows(bridge.database_url, "SELECT kind FROM portal_events ORDER BY id")]
    assert kinds == ["installed"]


def test_reinstall_updates_the_same_row(bridge: Bridge) -> None:
    bridge.install()
    bridge.wait_bound()
    first = rows(bridge.database_url, "SELECT * FROM portals")[0]
    second_result = bridge.install()  # the sandbox treats it as an update: version 2, new application token
    assert second_result["install_call"]["status"] == 200
    [row] = rows(bridge.database_url, "SELECT * FROM portals")
    assert row["app_version"] == 2
    assert row["access_token_enc"] != first["access_token_enc"]
    assert row["application_token_hash"] != first["application_token_hash"]
    assert row["installed_at"] == first["installed_at"]
    kinds = [r["kind"] for r in rows(bridge.database_url, "SELECT kind FROM portal_events ORDER BY id")]
    assert kinds == ["installed", "reinstalled"]


def test_bad_install_requests_store_nothing(bridge: Bridge) -> None:
    answer = bridge.http.post("/install", data={"event": "ONAPPINSTALL", "auth[member_id]": "abc"})
    assert answer.status_code == 400
    assert "auth[access_token]" in answer.json()["error"]
    answer = bridge.http.post("/install", data={"event": "ONCRMDEALADD"})
    assert answer.status_code == 400
    # Well-formed but forged: the OAuth server does not know the refresh token.
    forged = {
        "event": "ONAPPINSTALL",
        "data[VERSION]": "1",
        "auth[access_token]": "forged-access-0123456789",
        "auth[refresh_token]": "forged-refresh-0123456789",
        "auth[member_id]": "victim",
        "auth[domain]": "evil.example.com",
        "auth[client_endpoint]": "https://evil.example.com/rest/",
        "auth[application_token]": "forged-app-token",
    }
    answer = bridge.http.post("/install", data=forged)
    assert answer.status_code == 401
    assert "forged" not in answer.text
    assert rows(bridge.database_url, "SELECT * FROM portals") == []
    assert rows(bridge.database_url, "SELECT * FROM portal_events") == []


def test_install_with_tokens_of_another_portal_is_refused(bridge: Bridge) -> None:
    result = bridge.install()
    auth = _install_payload(result)["auth"]
    form = {f"auth[{k}]": v for k, v in auth.items()} | {"event": "ONAPPINSTALL"}
    # The real refresh token, but claimed for a different member_id: the OAuth server's answer decides.
    tokens = bridge.sandbox.control("POST", f"/_sandbox/apps/{bridge.app['client_id']}/install")["tokens"]
    form |= {"auth[member_id]": "someone-else", "auth[refresh_token]": tokens["refresh_token"]}
    answer = bridge.http.post("/install", data=form)
    assert answer.status_code == 401
    assert rows(bridge.database_url, "SELECT member_id FROM portals") == [{"member_id": auth["member_id"]}]


def test_install_page_in_frame(bridge_factory: Any) -> None:
    bridge: Bridge = bridge_factory(api_only=False, install_url="")
    # Point the app's install URL at the frame page now that the server's address is known.
    bridge.sandbox.portal.world.apps[bridge.app["client_id"]].install_url = f"{bridge.base_url}/install/page"
    result = bridge.install()
    call = result["install_call"]
    assert call["status"] == 200, call
    assert "BX24.installFinish()" in call["response"] and "//api.bitrix24.com/api/v1/" in call["response"]
    [row] = rows(bridge.database_url, "SELECT * FROM portals")
    assert row["status"] == "active" and row["application_token_hash"]
    for secret in (call["payload"]["AUTH_ID"], call["payload"]["REFRESH_ID"], call["payload"]["APPLICATION_TOKEN"]):
        assert secret not in dump_text(bridge.database_url)
    answer = bridge.http.post("/install/page?DOMAIN=x.example.com", data={"AUTH_ID": "a"})
    assert answer.status_code == 400 and "REFRESH_ID" in answer.json()["error"]
    # The administrator's browser in the frame gets a page instead.
    html = {"Accept": "text/html,application/xhtml+xml"}
    page = bridge.http.post("/install/page?DOMAIN=x.example.com", data={"AUTH_ID": "a"}, headers=html)
    assert page.status_code == 400 and page.headers["content-type"].startswith("text/html")
    assert "REFRESH_ID" in page.text


def test_cli_lists_and_shows_portals_without_secrets(bridge: Bridge) -> None:
    import os
    import subprocess
    import sys

    auth = _install_payload(bridge.install())["auth"]
    bridge.wait_bound()
    [row] = rows(bridge.database_url, "SELECT * FROM portals")
    env = {k: v for k, v in os.environ.items() if not k.startswith("B24BRIDGE_")}
    # No COLUMNS: piped output must not be cut to a guessed terminal width.
    env |= {"B24BRIDGE_DATABASE_URL": bridge.database_url, "B24BRIDGE_ENCRYPTION_KEYS": KEY}

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        command = [sys.executable, "-m", "b24bridge.cli", "portals", *args]
        return subprocess.run(command, env=env, capture_output=True, text=True, timeout=60)

    listed = run("list")
    assert listed.returncode == 0, listed.stderr
    assert auth["member_id"] in listed.stdout and "active" in listed.stdout
    shown = run("show", auth["member_id"])
    assert shown.returncode == 0, shown.stderr
    assert "stored (encrypted)" in shown.stdout and "installed" in shown.stdout
    for secret in (auth["access_token"], auth["refresh_token"], auth["application_token"]):
        assert secret not in listed.stdout + shown.stdout
    for column in ("access_token_enc", "refresh_token_enc", "application_token_hash"):
        assert row[column] not in shown.stdout
    missing = run("show", "nobody")
    assert missing.returncode == 1 and "no portal nobody" in missing.stderr
    as_json = run("list", "--json")
    assert as_json.returncode == 0, as_json.stderr
    [listed_row] = json.loads(as_json.stdout)
    assert listed_row["member_id"] == auth["member_id"] and listed_row["status"] == "active"
    detail = json.loads(run("show", auth["member_id"], "--json").stdout)
    assert detail["domain"] == row["domain"] and detail["history"]
    stored = (row["access_token_enc"], row["refresh_token_enc"], row["application_token_hash"])
    for secret in (auth["access_token"], auth["refresh_token"], auth["application_token"], *stored):
        assert secret not in as_json.stdout + json.dumps(detail)
