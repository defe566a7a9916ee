"""The "Outbound webhook" automation rule (REFERENCE 7.5; bizproc ``WebHookActivity``): a deal entering a stage
POSTs ``document_id`` to an administrator-typed URL with the deal's fields filled in, once, without any auth."""

from __future__ import annotations

from typing import Any

from tests.livehttp import Receiver
from tests.sandbox.conftest import LiveSandbox


def add_rule(sandbox: LiveSandbox, handler: str, **rule: Any) -> dict[str, Any]:
    body = {"type": "webhook", "stage_id": "PREPARATION", "handler": handler, **rule}
    created: dict[str, Any] = sandbox.control("POST", "/_sandbox/automation/rules", body)
    return created


def add_deal(sandbox: LiveSandbox, **fields: Any) -> int:
    response = sandbox.call("crm.deal.add", {"fields": {"TITLE": "Order 981", **fields}})
    assert response.status_code == 200, response.text
    return int(response.json()["result"])


def webhook_calls(sandbox: LiveSandbox) -> list[dict[str, Any]]:
    calls: list[dict[str, Any]] = sandbox.control("GET", "/_sandbox/handler-calls?kind=webhook&settle=1")["calls"]
    return calls


def test_wire_format(sandbox: LiveSandbox, receiver: Receiver) -> None:
    rule = add_rule(sandbox, receiver.url("/hook/s3cret?deal={=Document:ID}&title={=Document:TITLE}"))
    assert {k: rule[k] for k in ("type", "entity", "category_id", "stage_id")} == {
        "type": "webhook", "entity": "DEAL", "category_id": 0, "stage_id": "PREPARATION"}  # fmt: skip
    deal_id = add_deal(sandbox, STAGE_ID="PREPARATION")
    [request] = receiver.wait_for(1)
    assert request["method"] == "POST" and request["path"] == "/hook/s3cret"
    assert request["headers"]["content-type"] == "application/x-www-form-urlencoded"
    # The fields are filled into the URL (the space percent-encoded), the body is the document id and nothing else.
    assert request["query"] == {"deal": str(deal_id), "title": "Order 981"}
    assert "title=Order%20981" in webhook_calls(sandbox)[0]["url"]
    document_id = ["crm", "CCrmDocumentDeal", f"DEAL_{deal_id}"]
    assert request["form"] == [(f"document_id[{i}]", part) for i, part in enumerate(document_id)]
    [call] = webhook_calls(sandbox)
    assert (call["kind"], call["status"], call["ok"], call["rule_id"]) == ("webhook", 200, True, rule["id"])
    assert call["document_id"] == document_id
    # No workflow with an application robot is involved.
    assert sandbox.control("GET", "/_sandbox/workflows")["total"] == 0


def test_sent_once_and_never_retried(sandbox: LiveSandbox, receiver: Receiver) -> None:
    receiver.status = 500
    add_rule(sandbox, receiver.url("/hook"))
    add_deal(sandbox, STAGE_ID="PREPARATION")
    [call] = webhook_calls(sandbox)  # settled: every call the portal makes has been made and answered
    assert (call["status"], call["ok"], call["error"]) == (500, False, "handler answered HTTP 500")
    assert len(receiver.requests) == 1


def test_fires_when_a_deal_enters_the_stage_of_its_funnel(sandbox: LiveSandbox, receiver: Receiver) -> None:
    funnel = sandbox.call("crm.category.add", {"entityTypeId": 2, "fields": {"name": "B"}}).json()["result"]
    category_id = funnel["category"]["id"]
    add_rule(sandbox, receiver.url("/default"), stage_id="EXECUTING")
    add_rule(sandbox, receiver.url("/funnel"), stage_id=f"C{category_id}:EXECUTING", category_id=category_id)
    in_default = add_deal(sandbox)
    in_funnel = add_deal(sandbox, CATEGORY_ID=category_id)
    sandbox.call("crm.deal.update", {"id": in_default, "fields": {"TITLE": "renamed"}})
    assert webhook_calls(sandbox) == []
    sandbox.control("POST", f"/_sandbox/deals/{in_default}/stage", {"stage_id": "EXECUTING"})
    sandbox.control("POST", "/_sandbox/deals/move", {"deal_ids": [in_funnel], "stage_id": f"C{category_id}:EXECUTING"})
    sandbox.control("POST", f"/_sandbox/deals/{in_default}/stage", {"stage_id": "EXECUTING"})  # already there
    calls = webhook_calls(sandbox)
    assert sorted((c["url"].rsplit("/", 1)[1], c["document_id"][2]) for c in calls) == [
        ("default", f"DEAL_{in_default}"), ("funnel", f"DEAL_{in_funnel}")]  # fmt: skip


def test_rule_validation(sandbox: LiveSandbox) -> None:
    cases = {
        None: "handler is required",
        "ftp://files.example.com/x": "must be http or https",
        "http://localhost:8000/x": "host must contain a dot",
    }
    for handler, message in cases.items():
        response = sandbox.http.post(
            "/_sandbox/automation/rules", json={"type": "webhook", "stage_id": "NEW", "handler": handler}
        )
        assert response.status_code == 400 and message in response.json()["error"]
    bad_type = sandbox.http.post("/_sandbox/automation/rules", json={"type": "email", "stage_id": "NEW"})
    assert bad_type.status_code == 400 and "type must be one of" in bad_type.json()["error"]


def test_filled_in_url_that_is_not_acceptable_sends_nothing(sandbox: LiveSandbox, receiver: Receiver) -> None:
    # The host comes from the deal; a host without a dot makes the portal skip the request silently.
    add_rule(sandbox, "http://{=Document:TITLE}/x")
    add_deal(sandbox, TITLE="localhost", STAGE_ID="PREPARATION")
    assert webhook_calls(sandbox) == []
