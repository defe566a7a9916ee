"""The create-contact robot end to end: sandbox workflow -> POST /robots/{code} -> job -> CRM -> event.send."""

from __future__ import annotations

import httpx

from b24bridge.robots.definitions.create_contact import CODE, ORIGINATOR_ID
from b24bridge.sandbox.wire import php_pairs
from tests.portals.conftest import dump_text, rows
from tests.robots.conftest import (
    PERSON,
    RobotBridge,
    add_rule,
    contacts,
    move,
    new_deal,
    wait_run,
    wait_workflow,
)
from tests.sandbox.conftest import LiveSandbox


def _robot_calls(sandbox: LiveSandbox) -> list[dict[str, object]]:
    calls: list[dict[str, object]] = sandbox.control("GET", "/_sandbox/handler-calls?kind=robot")["calls"]
    return calls


def test_deal_moved_into_stage_creates_contact_and_answers_workflow(bridge: RobotBridge) -> None:
    sandbox = bridge.sandbox
    bridge.install_and_sync()
    add_rule(sandbox, bridge.client_id, {**PERSON, "responsible": "user_1", "source": "WEB"}, timeout_duration=60)
    workflow_id = move(sandbox, new_deal(sandbox))

    wf = wait_workflow(sandbox, workflow_id)
    assert wf["status"] == "completed", wf
    contact_id = int(wf["return_values"]["contact_id"])
    assert wf["return_values"]["is_new"] == "Y"

    answer = sandbox.call("crm.contact.get", {"id": contact_id})
    contact = answer.json()["result"]
    assert (contact["NAME"], contact["LAST_NAME"], contact["SECOND_NAME"]) == ("Ann", "Lee", "Marie")
    assert [p["VALUE"] for p in contact["PHONE"]] == ["+15551234567"]
    assert [e["VALUE"] for e in contact["EMAIL"]] == ["ann.lee@example.com"]
    assert contact["ORIGINATOR_ID"] == ORIGINATOR_ID and contact["ORIGIN_ID"].startswith("run:")
    assert contact["SOURCE_ID"] == "WEB" and str(contact["ASSIGNED_BY_ID"]) == "1"

    run = wait_run(bridge.database_url, workflow_id)
    assert run["status"] == "succeeded" and run["attempts"] == 1
    assert run["outcome"]["values"] == {"contact_id": contact_id, "is_new": "Y"}
    assert run["robot_code"] == CODE and run["document_id"][0] == "crm"
    calls = rows(bridge.database_url, "SELECT method, status FROM run_calls WHERE run_id = %s ORDER BY id", run["id"])
    assert calls == [
        {"method": "crm.contact.add", "status": "ok"},
        {"method": "bizproc.event.send", "status": "ok"},
    ]
    # The call carried the acting user's token pair and the application token: none of it is stored.
    payload = _robot_calls(sandbox)[0]["payload"]
    assert isinstance(payload, dict)
    dump = str(rows(bridge.database_url, "SELECT r::text FROM runs r")) + dump_text(bridge.database_url)
    for secret in (payload["auth"]["access_token"], payload["auth"]["refresh_token"]):
        assert secret not in dump
    assert run["inputs"]["auth"]["member_id"] == payload["auth"]["member_id"]


def test_same_call_delivered_twice_creates_one_contact(bridge: RobotBridge) -> None:
    sandbox = bridge.sandbox
    bridge.install_and_sync()
    add_rule(sandbox, bridge.client_id, PERSON)
    workflow_id = move(sandbox, new_deal(sandbox))
    assert wait_workflow(sandbox, workflow_id)["status"] == "completed"
    first = wait_run(bridge.database_url, workflow_id)

    [call] = _robot_calls(sandbox)
    replay = httpx.post(str(call["url"]), data=dict(php_pairs(call["payload"])), timeout=10)  # type: ignore[arg-type]
    assert replay.status_code == 200, replay.text
    assert replay.json()["status"].startswith("duplicate")

    assert len(rows(bridge.database_url, "SELECT id FROM runs")) == 1
    assert wait_run(bridge.database_url, workflow_id)["id"] == first["id"]
    assert len(contacts(sandbox, ORIGINATOR_ID=ORIGINATOR_ID)) == 1


def test_wrong_application_token_is_refused_and_nothing_stored(bridge: RobotBridge) -> None:
    sandbox = bridge.sandbox
    bridge.install_and_sync()
    add_rule(sandbox, bridge.client_id, PERSON)
    # Stop the workflow's own call from being accepted first: take its payload, then forge the token.
    workflow_id = move(sandbox, new_deal(sandbox))
    wait_workflow(sandbox, workflow_id)
    [call] = _robot_calls(sandbox)
    payload = dict(call["payload"])  # type: ignore[call-overload]
    payload["workflow_id"] = "forged.00000001"
    payload["auth"] = {**payload["auth"], "application_token": "0" * 32}
    answer = httpx.post(str(call["url"]), data=dict(php_pairs(payload)), timeout=10)
    assert answer.status_code == 401
    del payload["auth"]["application_token"]
    assert httpx.post(str(call["url"]), data=dict(php_pairs(payload)), timeout=10).status_code == 401
    assert rows(bridge.database_url, "SELECT id FROM runs WHERE workflow_id = 'forged.00000001'") == []
    assert len(rows(bridge.database_url, "SELECT id FROM runs")) == 1  # only the genuine call


def test_bad_phone_ends_workflow_with_error_and_creates_nothing(bridge: RobotBridge) -> None:
    sandbox = bridge.sandbox
    bridge.install_and_sync()
    add_rule(sandbox, bridge.client_id, {**PERSON, "phone": "call me maybe"}, timeout_duration=60)
    workflow_id = move(sandbox, new_deal(sandbox))

    wf = wait_workflow(sandbox, workflow_id)
    assert wf["status"] == "completed", wf  # answered, not timed out
    assert not wf["return_values"].get("contact_id")
    messages = [entry["message"] for entry in wf["log"] if entry["source"] == "bizproc.event.send"]
    assert len(messages) == 1 and "phone" in messages[0] and "call me maybe" in messages[0]
    assert contacts(sandbox) == []

    run = wait_run(bridge.database_url, workflow_id)
    assert run["status"] == "failed" and "phone" in run["error"]
    calls = rows(bridge.database_url, "SELECT method FROM run_calls WHERE run_id = %s", run["id"])
    assert calls == [{"method": "bizproc.event.send"}]


def test_reuse_existing_finds_contact_by_phone(bridge: RobotBridge) -> None:
    sandbox = bridge.sandbox
    existing = sandbox.call(
        "crm.contact.add", {"fields": {"NAME": "Old", "PHONE": [{"VALUE": "+15551234567", "VALUE_TYPE": "WORK"}]}}
    ).json()["result"]
    bridge.install_and_sync()
    add_rule(sandbox, bridge.client_id, {**PERSON, "reuse_existing": "Y"})
    wf = wait_workflow(sandbox, move(sandbox, new_deal(sandbox)))
    assert wf["return_values"]["contact_id"] in (existing, str(existing))
    assert wf["return_values"]["is_new"] == "N"
    assert len(contacts(sandbox)) == 1


def test_expired_access_token_mid_run_is_refreshed_and_persisted(bridge: RobotBridge) -> None:
    sandbox = bridge.sandbox
    bridge.install_and_sync()
    before = rows(bridge.database_url, "SELECT access_token_enc, token_expires_at FROM portals")[0]
    sandbox.control("POST", "/_sandbox/clock", {"advance": 5})  # so the new expiry is visibly later
    sandbox.control("POST", "/_sandbox/tokens/expire", {"client_id": bridge.client_id})
    add_rule(sandbox, bridge.client_id, PERSON)
    workflow_id = move(sandbox, new_deal(sandbox))

    wf = wait_workflow(sandbox, workflow_id)
    assert wf["status"] == "completed" and wf["return_values"]["contact_id"], wf
    assert wait_run(bridge.database_url, workflow_id)["status"] == "succeeded"
    after = rows(bridge.database_url, "SELECT access_token_enc, token_expires_at FROM portals")[0]
    assert after["access_token_enc"] != before["access_token_enc"]
    assert after["token_expires_at"] > before["token_expires_at"]
