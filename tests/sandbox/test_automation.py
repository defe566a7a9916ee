"""Deal-stage automation end to end: rule -> robot call to a live handler -> bizproc.event.send (REFERENCE 5.4-5.5)."""

from __future__ import annotations

import time
from typing import Any

from b24bridge.sandbox import bizproc_runtime
from b24bridge.sandbox.state import World
from tests.livehttp import Receiver
from tests.sandbox.conftest import LiveSandbox
from tests.sandbox.helpers import INSTALL_AUTH_KEYS, app_token, issue_token
from tests.sandbox.test_bizproc import rest

PROPERTIES = {
    "phone": {"Name": "Phone", "Type": "string", "Default": "{=Document:TITLE}"},
    "text": {"Name": "Text", "Type": "text"},
    "tags": {"Name": "Tags", "Type": "string", "Multiple": "Y"},
    "who": {"Name": "Responsible", "Type": "user", "Default": "Author;"},
    "empty": {"Name": "Nothing", "Type": "string", "Default": None},
}
RETURN_PROPERTIES = {
    "message_id": {"Name": "Message ID", "Type": "string"},
    "ok": {"Name": "Sent", "Type": "bool", "Default": "N"},
}


def setup_robot(sandbox: LiveSandbox, handler: str, **robot: Any) -> str:
    token = app_token(sandbox)
    params = {
        "CODE": "send_sms",
        "HANDLER": handler,
        "AUTH_USER_ID": 1,
        "USE_SUBSCRIPTION": "Y",
        "NAME": "Send SMS",
        "PROPERTIES": PROPERTIES,
        "RETURN_PROPERTIES": RETURN_PROPERTIES,
        **robot,
    }
    assert rest(sandbox, token, "bizproc.robot.add", params).json()["result"] is True
    return token


def add_rule(sandbox: LiveSandbox, **rule: Any) -> dict[str, Any]:
    body = {
        "stage_id": "PREPARATION",
        "robot_code": "send_sms",
        "properties": {"text": "Deal {=Document:TITLE} #{=Document:ID}", "tags": ["a", "{=Document:STAGE_ID}"]},
        **rule,
    }
    created: dict[str, Any] = sandbox.control("POST", "/_sandbox/automation/rules", body)
    return created


def add_deal(sandbox: LiveSandbox, **fields: Any) -> int:
    response = sandbox.call("crm.deal.add", {"fields": {"TITLE": "Order 981", **fields}})
    assert response.status_code == 200, response.text
    return int(response.json()["result"])


def workflows(sandbox: LiveSandbox, **query: str) -> list[dict[str, Any]]:
    qs = "&".join(f"{k}={v}" for k, v in {"settle": "1", **query}.items())
    found: list[dict[str, Any]] = sandbox.control("GET", f"/_sandbox/workflows?{qs}")["workflows"]
    return found


def test_robot_call_has_the_documented_fields_and_event_send_completes(
    sandbox: LiveSandbox, receiver: Receiver
) -> None:
    setup_robot(sandbox, receiver.url("/robot"))
    rule = add_rule(sandbox)
    deal_id = add_deal(sandbox, STAGE_ID="PREPARATION")
    [request] = receiver.wait_for(1)
    assert request["method"] == "POST"
    assert request["headers"]["content-type"] == "application/x-www-form-urlencoded"
    form = dict(request["form"])
    assert [k for k, _ in request["form"]] == [
        "workflow_id",
        "code",
        *[f"document_id[{i}]" for i in range(3)],
        *[f"document_type[{i}]" for i in range(3)],
        "event_token",
        "properties[phone]",
        "properties[text]",
        "properties[tags][0]",
        "properties[tags][1]",
        "properties[who]",
        "properties[empty]",
        "use_subscription",
        "timeout_duration",
        "ts",
        *[f"auth[{k}]" for k in INSTALL_AUTH_KEYS],
    ]
    assert form["code"] == "send_sms"
    assert [form[f"document_id[{i}]"] for i in range(3)] == ["crm", "CCrmDocumentDeal", f"DEAL_{deal_id}"]
    assert [form[f"document_type[{i}]"] for i in range(3)] == ["crm", "CCrmDocumentDeal", "DEAL"]
    assert form["properties[phone]"] == "Order 981"  # the property's Default template
    assert form["properties[text]"] == f"Deal Order 981 #{deal_id}"
    assert (form["properties[tags][0]"], form["properties[tags][1]"]) == ("a", "PREPARATION")
    assert form["properties[who]"] == "user_1"
    assert form["properties[empty]"] == ""
    assert (form["use_subscription"], form["timeout_duration"]) == ("Y", "0")
    assert abs(int(form["ts"]) - time.time()) < 60
    workflow_id, activity, tail = form["event_token"].split("|")
    event_id, signature = tail.split(".")
    assert workflow_id == form["workflow_id"] and activity == rule["activity_name"]
    assert len(event_id) == 32 and len(signature) == 64
    info = sandbox.refresh_info()
    app = next(a for a in info["apps"] if a["client_id"] == sandbox.client_id)
    assert form["auth[application_token]"] == app["application_token"]
    assert form["auth[member_id]"] == info["member_id"] and form["auth[user_id]"] == "1"

    [wf] = workflows(sandbox)
    assert wf["status"] == "running" and wf["handler"]["status"] == 200

    # The handler answers with the token it was given.
    token = form["auth[access_token]"]
    log = rest(sandbox, token, "bizproc.activity.log", {"EVENT_TOKEN": form["event_token"], "LOG_MESSAGE": "working"})
    assert log.json()["result"] is True
    empty = rest(sandbox, token, "bizproc.activity.log", {"EVENT_TOKEN": form["event_token"]})
    assert (empty.status_code, empty.json()["error"]) == (400, "ERROR_EMPTY_LOG_MESSAGE")
    sent = rest(
        sandbox,
        token,
        "bizproc.event.send",
        {
            "EVENT_TOKEN": form["event_token"],
            "RETURN_VALUES": {"MESSAGE_ID": "MSG-42", "unknown": "ignored"},
            "LOG_MESSAGE": "SMS accepted",
        },
    )
    assert sent.status_code == 200 and sent.json()["result"] is True
    done = sandbox.control("GET", f"/_sandbox/workflows/{workflow_id}")
    assert done["status"] == "completed" and done["finished_at"] is not None
    assert done["return_values"] == {"message_id": "MSG-42", "ok": "N", "IsTimeout": 0}
    assert [entry["message"] for entry in done["log"]] == ["working", "SMS accepted"]

    # A second send is accepted and changes nothing.
    again = rest(
        sandbox, token, "bizproc.event.send", {"EVENT_TOKEN": form["event_token"], "RETURN_VALUES": {"ok": "Y"}}
    )
    assert again.json()["result"] is True
    assert sandbox.control("GET", f"/_sandbox/workflows/{workflow_id}") == done
    assert len(receiver.requests) == 1


def test_rules_fire_only_when_a_deal_enters_their_stage(sandbox: LiveSandbox, receiver: Receiver) -> None:
    setup_robot(sandbox, receiver.url("/robot"), USE_SUBSCRIPTION="N")
    rule = add_rule(sandbox, stage_id="EXECUTING")
    add_rule(sandbox, stage_id="EXECUTING", category_id=3)
    deal_id = add_deal(sandbox, STAGE_ID="NEW")
    assert workflows(sandbox) == []
    # A change of another field is not a stage change.
    assert sandbox.call("crm.deal.update", {"id": deal_id, "fields": {"TITLE": "renamed"}}).status_code == 200
    assert workflows(sandbox) == []
    moved = sandbox.control("POST", f"/_sandbox/deals/{deal_id}/stage", {"stage_id": "EXECUTING"})
    assert moved["deal"]["STAGE_ID"] == "EXECUTING" and len(moved["workflows"]) == 1
    [wf] = workflows(sandbox)
    # USE_SUBSCRIPTION=N: the robot closes as soon as its call is queued.
    assert wf["rule_id"] == rule["id"] and wf["status"] == "completed"
    assert wf["document_id"] == ["crm", "CCrmDocumentDeal", f"DEAL_{deal_id}"]
    assert dict(receiver.wait_for(1)[0]["form"])["use_subscription"] == "N"
    # Moving to the same stage again changes nothing; leaving and re-entering fires again.
    assert sandbox.control("POST", f"/_sandbox/deals/{deal_id}/stage", {"stage_id": "EXECUTING"})["workflows"] == []
    sandbox.call("crm.deal.update", {"id": deal_id, "fields": {"STAGE_ID": "NEW"}})
    sandbox.call("crm.deal.update", {"id": deal_id, "fields": {"STAGE_ID": "EXECUTING"}})
    assert len(workflows(sandbox)) == 2


def test_timeout_closes_the_robot_with_is_timeout(sandbox: LiveSandbox, receiver: Receiver) -> None:
    setup_robot(sandbox, receiver.url("/robot"))
    add_rule(sandbox, timeout_duration=3600)
    add_deal(sandbox, STAGE_ID="PREPARATION")
    form = dict(receiver.wait_for(1)[0]["form"])
    assert form["timeout_duration"] == "3600"
    [running] = workflows(sandbox, status="running")
    # The sandbox clock stands in for the hour a real portal would wait.
    sandbox.control("POST", "/_sandbox/clock", {"advance": 3500})
    assert workflows(sandbox, status="running") == [running]
    sandbox.control("POST", "/_sandbox/clock", {"advance": 101})
    [wf] = workflows(sandbox, status="timeout")
    assert wf["return_values"] == {"message_id": None, "ok": "N", "IsTimeout": 1}
    assert wf["finished_at"] == wf["deadline"] == running["deadline"]
    # The robot call's access token has expired meanwhile (an hour): the answer comes with a fresh one.
    fresh_token = issue_token(sandbox, sandbox.client_id)
    late = rest(sandbox, fresh_token, "bizproc.event.send", {"EVENT_TOKEN": form["event_token"]})
    assert late.json()["result"] is True
    assert workflows(sandbox)[0] == wf


def test_failing_handler_is_recorded_and_not_retried(sandbox: LiveSandbox, receiver: Receiver) -> None:
    receiver.status = 500
    setup_robot(sandbox, receiver.url("/robot"))
    add_rule(sandbox)
    add_deal(sandbox, STAGE_ID="PREPARATION")
    [wf] = workflows(sandbox)  # settled: every call the portal makes has been made and answered
    assert len(receiver.requests) == 1
    # The queue server's delivery failure is invisible to the workflow: the robot keeps waiting.
    assert wf["status"] == "running"
    assert wf["handler"]["ok"] is False and wf["handler"]["status"] == 500
    calls = sandbox.control("GET", "/_sandbox/handler-calls?kind=robot")
    assert calls["total"] == 1 and calls["calls"][0]["status"] == 500


def test_unreachable_handler_is_recorded(sandbox: LiveSandbox, receiver: Receiver) -> None:
    setup_robot(sandbox, "http://127.0.0.1:9/robot")
    add_rule(sandbox)
    add_deal(sandbox, STAGE_ID="PREPARATION")
    [wf] = workflows(sandbox)
    assert wf["handler"]["status"] is None and wf["handler"]["error"]


def test_deleted_robot_fails_the_workflow(sandbox: LiveSandbox, receiver: Receiver) -> None:
    token = setup_robot(sandbox, receiver.url("/robot"))
    add_rule(sandbox)
    assert rest(sandbox, token, "bizproc.robot.delete", {"CODE": "send_sms"}).json()["result"] is True
    add_deal(sandbox, STAGE_ID="PREPARATION")
    [wf] = workflows(sandbox, status="failed")
    assert "not registered" in wf["reason"]
    sandbox.control("POST", f"/_sandbox/apps/{sandbox.client_id}/uninstall", {})
    add_deal(sandbox, STAGE_ID="PREPARATION")
    assert len(workflows(sandbox, status="failed")) == 2
    assert receiver.requests == []


def test_app_update_removes_its_robots_until_the_installer_registers_them_again(
    sandbox: LiveSandbox, receiver: Receiver
) -> None:
    # REFERENCE 5.1: robots are removed when the app is deleted or updated; each version's installer re-registers.
    token = setup_robot(sandbox, receiver.url("/robot"))
    add_rule(sandbox)
    assert rest(sandbox, token, "bizproc.robot.list").json()["result"] == ["send_sms"]
    update = sandbox.control("POST", f"/_sandbox/apps/{sandbox.client_id}/install", {})
    assert update["updated"] is True and update["app"]["version"] == 2
    assert update["removed_robots"] == ["send_sms"]
    # Tokens survive an update; the robot does not.
    assert rest(sandbox, token, "bizproc.robot.list").json()["result"] == []
    assert sandbox.control("GET", "/_sandbox/automation/rules")["total"] == 1  # the placed rule stays
    add_deal(sandbox, STAGE_ID="PREPARATION")
    [failed] = workflows(sandbox, status="failed")
    assert "not registered" in failed["reason"]
    assert receiver.requests == []
    # The new version's installer registers the robot again and the same rule runs it.
    setup_robot(sandbox, receiver.url("/robot"))
    assert rest(sandbox, token, "bizproc.robot.list").json()["result"] == ["send_sms"]
    add_deal(sandbox, STAGE_ID="PREPARATION")
    [running] = workflows(sandbox, status="running")
    assert running["rule_id"] == failed["rule_id"]
    receiver.wait_for(1, path="/robot")


def test_rule_control_api(sandbox: LiveSandbox, receiver: Receiver) -> None:
    bad = sandbox.http.post("/_sandbox/automation/rules", json={"stage_id": "NEW", "robot_code": "missing"})
    assert bad.status_code == 400 and "missing" in bad.json()["error"]
    setup_robot(sandbox, receiver.url("/robot"))
    rule = add_rule(sandbox)
    assert rule["client_id"] == sandbox.client_id and rule["category_id"] == 0
    assert sandbox.control("GET", "/_sandbox/automation/rules")["rules"] == [rule]
    assert sandbox.http.delete(f"/_sandbox/automation/rules/{rule['id']}").status_code == 200
    assert sandbox.http.delete(f"/_sandbox/automation/rules/{rule['id']}").status_code == 404
    assert sandbox.http.post("/_sandbox/deals/999/stage", json={"stage_id": "WON"}).status_code == 404
    assert sandbox.http.get("/_sandbox/workflows/nope").status_code == 404


def test_event_tokens_survive_state_round_trip() -> None:
    world = World()
    token = bizproc_runtime.make_event_token(world, "664f2c6e1a2b38.12345678", "A12345_67890_11111_22222", "x" * 32)
    reloaded = World.from_json(world.to_json())
    assert bizproc_runtime.open_event_token(reloaded, token) == (
        "664f2c6e1a2b38.12345678",
        "A12345_67890_11111_22222",
        "x" * 32,
    )
    assert bizproc_runtime.open_event_token(World(), token) is None


def test_many_deals_moved_over_time_each_start_a_workflow(sandbox: LiveSandbox, receiver: Receiver) -> None:
    setup_robot(sandbox, receiver.url("/robot"), USE_SUBSCRIPTION="N")
    add_rule(sandbox, stage_id="EXECUTING")
    deal_ids = [add_deal(sandbox, STAGE_ID="NEW") for _ in range(20)]
    began = time.monotonic()
    answer = sandbox.http.post(
        "/_sandbox/deals/move", json={"deal_ids": deal_ids, "stage_id": "EXECUTING", "over_seconds": 1.0}
    )
    assert answer.status_code == 202 and answer.json()["scheduled"] == 20
    assert time.monotonic() - began < 0.5  # answered at once, the moves follow
    calls = receiver.wait_for(20, timeout=10)
    assert len(calls) == 20
    spread = calls[-1]["at"] - calls[0]["at"]
    assert 0.7 < spread < 3.0  # spread over about a second, not fired at once
    assert sorted(w["document_id"][2] for w in workflows(sandbox)) == sorted(f"DEAL_{i}" for i in deal_ids)
    bad = sandbox.http.post("/_sandbox/deals/move", json={"deal_ids": [999999], "stage_id": "EXECUTING"})
    assert bad.status_code == 404
    assert sandbox.http.post("/_sandbox/deals/move", json={"deal_ids": "x", "stage_id": "E"}).status_code == 400
