"""Lead events (docs crm/leads/events/on-crm-lead-*.md) and automation on a lead stage: a robot or an outbound
webhook placed on a lead STATUS_ID runs when a lead enters it, with the document
``["crm", "CCrmDocumentLead", "LEAD_{id}"]``."""

from __future__ import annotations

from typing import Any

from tests.livehttp import Receiver
from tests.sandbox.conftest import LiveSandbox
from tests.sandbox.helpers import form, installed_app, rest
from tests.sandbox.test_automation import setup_robot, workflows


def ok(response: Any) -> Any:
    assert response.status_code == 200, response.text
    return response.json()["result"]


def test_lead_events_are_delivered(sandbox: LiveSandbox, receiver: Receiver) -> None:
    _, installed = installed_app(sandbox, receiver)
    token = installed["auth[access_token]"]
    assert {"ONCRMLEADADD", "ONCRMLEADUPDATE", "ONCRMLEADDELETE"} <= set(
        rest(sandbox, "events", token).json()["result"]
    )
    for event in ("ONCRMLEADADD", "ONCRMLEADUPDATE", "ONCRMLEADDELETE"):
        assert rest(sandbox, "event.bind", token, event=event, handler=receiver.url("/leads")).json()["result"] is True
    lead_id = ok(sandbox.call("crm.lead.add", {"fields": {"TITLE": "Web form"}}))
    ok(sandbox.call("crm.lead.update", {"id": lead_id, "fields": {"STATUS_ID": "IN_PROCESS"}}))
    ok(sandbox.call("crm.lead.productrows.set", {"id": lead_id, "rows": [{"PRICE": 5}]}))  # the total changes
    ok(sandbox.call("crm.lead.delete", {"id": lead_id}))
    ok(sandbox.call("crm.deal.add", {"fields": {"TITLE": "not a lead"}}))
    got = receiver.wait_for(4, path="/leads")
    sent = [(f["event"], f["data[FIELDS][ID]"], f["auth[user_id]"]) for f in map(form, got)]
    assert sent == [
        ("ONCRMLEADADD", str(lead_id), "1"), ("ONCRMLEADUPDATE", str(lead_id), "1"),
        ("ONCRMLEADUPDATE", str(lead_id), "1"), ("ONCRMLEADDELETE", str(lead_id), "1")]  # fmt: skip
    keys = [k for k, _ in got[0]["form"]]
    assert keys[:4] == ["event", "event_handler_id", "data[FIELDS][ID]", "ts"]
    calls = sandbox.control("GET", "/_sandbox/handler-calls?kind=event&settle=1")["calls"]
    assert len(calls) == 4 and all(c["ok"] for c in calls)


def test_robot_on_a_lead_stage(sandbox: LiveSandbox, receiver: Receiver) -> None:
    setup_robot(sandbox, receiver.url("/robot"), USE_SUBSCRIPTION="N")
    rule = {"entity": "LEAD", "stage_id": "IN_PROCESS", "robot_code": "send_sms",
            "properties": {"text": "Lead {=Document:TITLE} is {=Document:STATUS_ID}"}}  # fmt: skip
    created = sandbox.control("POST", "/_sandbox/automation/rules", rule)
    assert (created["entity"], created["category_id"], created["stage_id"]) == ("LEAD", 0, "IN_PROCESS")
    lead_id = ok(sandbox.call("crm.lead.add", {"fields": {"TITLE": "Call me"}}))  # NEW: no rule
    ok(sandbox.call("crm.lead.update", {"id": lead_id, "fields": {"COMMENTS": "still new"}}))
    assert workflows(sandbox) == []
    ok(sandbox.call("crm.lead.update", {"id": lead_id, "fields": {"STATUS_ID": "IN_PROCESS"}}))
    ok(sandbox.call("crm.lead.update", {"id": lead_id, "fields": {"COMMENTS": "stays in the stage"}}))
    [request] = receiver.wait_for(1, path="/robot")
    fields = dict(request["form"])
    document = ["crm", "CCrmDocumentLead", f"LEAD_{lead_id}"]
    assert [fields[f"document_id[{i}]"] for i in range(3)] == document
    assert [fields[f"document_type[{i}]"] for i in range(3)] == ["crm", "CCrmDocumentLead", "LEAD"]
    assert fields["properties[text]"] == "Lead Call me is IN_PROCESS"
    [wf] = workflows(sandbox)
    assert wf["document_id"] == document and wf["status"] == "completed"
    # Created directly in the stage fires too.
    other = ok(sandbox.call("crm.lead.add", {"fields": {"STATUS_ID": "IN_PROCESS"}}))
    assert [w["document_id"][2] for w in workflows(sandbox)] == [f"LEAD_{lead_id}", f"LEAD_{other}"]


def test_webhook_rule_on_a_lead_stage_and_validation(sandbox: LiveSandbox, receiver: Receiver) -> None:
    rule = {
        "type": "webhook",
        "entity": "LEAD",
        "stage_id": "CONVERTED",
        "handler": receiver.url("/hook?l={=Document:ID}"),
    }
    sandbox.control("POST", "/_sandbox/automation/rules", rule)
    lead_id = ok(sandbox.call("crm.lead.add", {"fields": {}}))
    ok(sandbox.call("crm.lead.update", {"id": lead_id, "fields": {"STATUS_ID": "CONVERTED"}}))
    [request] = receiver.wait_for(1, path="/hook")
    assert request["query"] == {"l": str(lead_id)}
    assert [v for _, v in request["form"]] == ["crm", "CCrmDocumentLead", f"LEAD_{lead_id}"]
    bad = sandbox.http.post("/_sandbox/automation/rules", json={**rule, "category_id": 2})
    assert bad.status_code == 400 and "category_id must be 0" in bad.text
