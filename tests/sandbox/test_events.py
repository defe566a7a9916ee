"""Conformance: event methods and bound-event delivery (REFERENCE 7.1-7.3; docs api-reference/events/*)."""

from __future__ import annotations

from typing import Any

from tests.livehttp import Receiver
from tests.sandbox.conftest import LiveSandbox
from tests.sandbox.helpers import EVENT_AUTH_KEYS, form, installed_app, oauth_token, register, rest


def _token(sandbox: LiveSandbox, receiver: Receiver, **fields: Any) -> tuple[dict[str, Any], str, dict[str, str]]:
    app, installed = installed_app(sandbox, receiver, **fields)
    return app, installed["auth[access_token]"], installed


def _error(response: Any) -> tuple[int, str]:
    return response.status_code, response.json()["error"]


def test_event_methods_are_application_only(sandbox: LiveSandbox) -> None:
    for method in ("event.bind", "event.get", "event.unbind", "events"):
        response = sandbox.call(method, {"event": "ONCRMDEALADD", "handler": "https://a.example.com/"})
        assert response.status_code == 403
        assert response.json() == {
            "error": "WRONG_AUTH_TYPE",
            "error_description": "Current authorization type is denied for this method",
        }


def test_bind_validation(sandbox: LiveSandbox, receiver: Receiver) -> None:
    _, token, _ = _token(sandbox, receiver)
    cases = {
        "http://localhost:8000/h": "ERROR_WRONG_HANDLER_URL",
        "not a url": "ERROR_WRONG_HANDLER_URL",
        "ftp://files.example.com/h": "ERROR_UNSUPPORTED_PROTOCOL",
    }
    for handler, code in cases.items():
        assert _error(rest(sandbox, "event.bind", token, event="ONCRMDEALADD", handler=handler)) == (400, code)
    unknown = rest(sandbox, "event.bind", token, event="ONNOSUCHTHING", handler=receiver.url())
    assert unknown.status_code == 400
    assert unknown.json() == {"error": "ERROR_EVENT_NOT_FOUND", "error_description": "Event not found"}
    missing = rest(sandbox, "event.bind", token, event="ONCRMDEALADD")
    assert missing.json()["error"] == "ERROR_ARGUMENT"
    assert rest(sandbox, "event.bind", token, event="ONCRMDEALADD", handler=receiver.url()).json()["result"] is True
    duplicate = rest(sandbox, "event.bind", token, event="onCrmDealAdd", handler=receiver.url())
    assert _error(duplicate) == (400, "ERROR_CORE")


def test_events_outside_the_app_scopes_are_not_found(sandbox: LiveSandbox, receiver: Receiver) -> None:
    _, token, _ = _token(sandbox, receiver, scopes=["user"])
    response = rest(sandbox, "event.bind", token, event="ONCRMDEALADD", handler=receiver.url())
    assert _error(response) == (400, "ERROR_EVENT_NOT_FOUND")
    names = rest(sandbox, "events", token).json()["result"]
    assert "ONAPPUNINSTALL" in names and "ONCRMDEALADD" not in names
    assert "ONCRMDEALADD" in rest(sandbox, "events", token, full=1).json()["result"]


def test_bind_get_unbind(sandbox: LiveSandbox, receiver: Receiver) -> None:
    _, token, _ = _token(sandbox, receiver)
    handler = receiver.url("/deals")
    assert rest(sandbox, "event.bind", token, event="onCrmDealUpdate", handler=handler).json()["result"] is True
    assert rest(sandbox, "event.bind", token, event="ONCRMDEALADD", handler=handler, auth_type=2).json()["result"]
    listed = rest(sandbox, "event.get", token).json()["result"]
    assert listed == [
        {"event": "ONCRMDEALUPDATE", "handler": handler, "auth_type": "0", "offline": 0},
        {"event": "ONCRMDEALADD", "handler": handler, "auth_type": "2", "offline": 0},
    ]
    gone = rest(sandbox, "event.unbind", token, event="ONCRMDEALUPDATE", handler=handler)
    assert gone.json()["result"] == {"count": 1}
    again = rest(sandbox, "event.unbind", token, event="ONCRMDEALUPDATE", handler=handler)
    assert again.json()["result"] == {"count": 0}
    wrong_user = rest(sandbox, "event.unbind", token, event="ONCRMDEALADD", handler=handler, auth_type=0)
    assert wrong_user.json()["result"] == {"count": 0}
    assert len(rest(sandbox, "event.get", token).json()["result"]) == 1


def test_crm_change_is_posted_to_the_handler(sandbox: LiveSandbox, receiver: Receiver) -> None:
    _, token, installed = _token(sandbox, receiver)
    rest(sandbox, "event.bind", token, event="ONCRMCONTACTADD", handler=receiver.url("/contacts"))
    rest(sandbox, "event.bind", token, event="ONCRMCONTACTUPDATE", handler=receiver.url("/contacts"))
    added = sandbox.call("crm.contact.add", {"fields": {"NAME": "Ivan"}})
    assert added.status_code == 200, added.text
    contact_id = str(added.json()["result"])
    (request,) = receiver.wait_for(1, path="/contacts")
    assert request["method"] == "POST"
    assert request["headers"]["content-type"].startswith("application/x-www-form-urlencoded")
    keys = [k for k, _ in request["form"]]
    assert keys == ["event", "event_handler_id", "data[FIELDS][ID]", "ts", *(f"auth[{k}]" for k in EVENT_AUTH_KEYS)]
    fields = form(request)
    assert fields["event"] == "ONCRMCONTACTADD"
    assert fields["data[FIELDS][ID]"] == contact_id
    assert fields["auth[application_token]"] == installed["auth[application_token]"]
    assert fields["auth[user_id]"] == "1"  # the webhook's user made the change
    assert fields["auth[scope]"] == "crm,user"
    # The event's token is a working token of that user.
    assert rest(sandbox, "crm.contact.get", fields["auth[access_token]"], id=contact_id).status_code == 200

    sandbox.call("crm.contact.update", {"id": contact_id, "fields": {"NAME": "Petr"}})
    updates = receiver.wait_for(2, path="/contacts")
    assert form(updates[1])["event"] == "ONCRMCONTACTUPDATE"
    calls = sandbox.control("GET", "/_sandbox/handler-calls?kind=event&settle=1")["calls"]
    assert [c["event"] for c in calls] == ["ONCRMCONTACTADD", "ONCRMCONTACTUPDATE"]
    assert all(c["ok"] for c in calls)


def test_auth_type_user_gets_the_tokens(sandbox: LiveSandbox, receiver: Receiver) -> None:
    _, token, _ = _token(sandbox, receiver)
    rest(sandbox, "event.bind", token, event="ONCRMDEALADD", handler=receiver.url("/deals"), auth_type=2)
    sandbox.call("crm.deal.add", {"fields": {"TITLE": "Deal"}})
    (request,) = receiver.wait_for(1, path="/deals")
    assert form(request)["auth[user_id]"] == "2"


def test_no_events_until_installation_is_finished(sandbox: LiveSandbox, receiver: Receiver) -> None:
    app = register(sandbox, handler_url=receiver.url("/app"), install_url=receiver.url("/setup"), scopes=["crm"])
    sandbox.control("POST", f"/_sandbox/apps/{app['client_id']}/install")
    token = form(receiver.wait_for(1, path="/setup")[0])["AUTH_ID"]
    assert rest(sandbox, "event.bind", token, event="ONCRMCOMPANYADD", handler=receiver.url("/co")).json()["result"]
    sandbox.call("crm.company.add", {"fields": {"TITLE": "Before"}})
    sandbox.control("POST", "/_sandbox/settle")
    assert receiver.wait_for(1, path="/co", timeout=0.3) == []
    sandbox.control("POST", f"/_sandbox/apps/{app['client_id']}/install-finish")
    sandbox.call("crm.company.add", {"fields": {"TITLE": "After"}})
    assert len(receiver.wait_for(1, path="/co")) == 1


def test_failed_handler_is_not_retried(sandbox: LiveSandbox, receiver: Receiver) -> None:
    _, token, _ = _token(sandbox, receiver)
    rest(sandbox, "event.bind", token, event="ONCRMDEALADD", handler=receiver.url("/deals"))
    receiver.status = 500
    sandbox.call("crm.deal.add", {"fields": {"TITLE": "Deal"}})
    calls = sandbox.control("GET", "/_sandbox/handler-calls?kind=event&settle=1")["calls"]
    assert len(calls) == 1
    assert calls[0]["ok"] is False and calls[0]["status"] == 500
    assert len(receiver.wait_for(2, path="/deals", timeout=0.5)) == 1


def test_event_test_fires_onapptest(sandbox: LiveSandbox, receiver: Receiver) -> None:
    _, token, _ = _token(sandbox, receiver)
    rest(sandbox, "event.bind", token, event="ONAPPTEST", handler=receiver.url("/test"))
    assert rest(sandbox, "event.test", token, any="data").json()["result"] == 1
    (request,) = receiver.wait_for(1, path="/test")
    fields = form(request)
    assert fields["event"] == "ONAPPTEST"
    assert fields["data[QUERY][any]"] == "data"
    assert fields["data[LANGUAGE_ID]"] == "en"


def test_non_admin_binds_only_for_itself(sandbox: LiveSandbox, receiver: Receiver) -> None:
    app, _, _ = _token(sandbox, receiver)
    code_response = sandbox.http.get(
        "/oauth/authorize/", params={"client_id": app["client_id"], "user_id": "2"}, follow_redirects=False
    )
    assert code_response.status_code == 200  # no redirect URL: the code is shown on the page
    code = code_response.text.split('id="code">')[1].split("<")[0]
    token = oauth_token(sandbox, app, grant_type="authorization_code", code=code).json()["access_token"]
    other = rest(sandbox, "event.bind", token, event="ONCRMDEALADD", handler=receiver.url(), auth_type=1)
    assert _error(other) == (403, "ACCESS_DENIED")
    offline = rest(sandbox, "event.bind", token, event="ONCRMDEALADD", event_type="offline")
    assert _error(offline) == (403, "ACCESS_DENIED")
    assert rest(sandbox, "event.bind", token, event="ONCRMDEALADD", handler=receiver.url()).json()["result"] is True
    assert rest(sandbox, "event.get", token).json()["result"][0]["auth_type"] == "2"


def test_offline_events_queue(sandbox: LiveSandbox, receiver: Receiver) -> None:
    _, token, _ = _token(sandbox, receiver)
    bound = rest(sandbox, "event.bind", token, event="ONCRMCONTACTUPDATE", event_type="offline")
    assert bound.json()["result"] is True
    assert rest(sandbox, "event.get", token).json()["result"] == [
        {"event": "ONCRMCONTACTUPDATE", "connector_id": "", "offline": 1}
    ]
    contact_id = sandbox.call("crm.contact.add", {"fields": {"NAME": "A"}}).json()["result"]
    for name in ("B", "C"):
        sandbox.call("crm.contact.update", {"id": contact_id, "fields": {"NAME": name}})
    got = rest(sandbox, "event.offline.get", token).json()["result"]
    assert got["process_id"] is None
    (event,) = got["events"]  # one record per object: the latest change wins
    assert list(event) == ["ID", "TIMESTAMP_X", "EVENT_NAME", "EVENT_DATA", "EVENT_ADDITIONAL", "MESSAGE_ID"]
    assert event["EVENT_NAME"] == "ONCRMCONTACTUPDATE"
    assert event["EVENT_DATA"] == {"FIELDS": {"ID": str(contact_id)}}
    assert rest(sandbox, "event.offline.get", token).json()["result"]["events"] == []


# --- who made the change: a user's hit carries tokens, automation does not (REFERENCE 7.2) --------------------

BARE_AUTH_KEYS = ["domain", "server_endpoint", "client_endpoint", "member_id", "application_token"]


def test_event_tokens_belong_to_the_caller(sandbox: LiveSandbox, receiver: Receiver) -> None:
    _, token, _ = _token(sandbox, receiver)
    rest(sandbox, "event.bind", token, event="ONCRMDEALADD", handler=receiver.url("/deals"))
    hook = sandbox.control("POST", "/_sandbox/webhooks", {"user_id": 2, "scopes": ["crm"]})
    assert sandbox.http.post(f"{hook['url']}crm.deal.add", json={"fields": {"TITLE": "by 2"}}).status_code == 200
    (request,) = receiver.wait_for(1, path="/deals")
    fields = form(request)
    assert fields["auth[user_id]"] == "2"
    me = rest(sandbox, "user.current", fields["auth[access_token]"]).json()["result"]
    assert me["ID"] == "2"


def test_automation_changes_send_events_without_tokens(sandbox: LiveSandbox, receiver: Receiver) -> None:
    _, token, installed = _token(sandbox, receiver)
    rest(sandbox, "event.bind", token, event="ONCRMDEALUPDATE", handler=receiver.url("/deals"))
    rest(sandbox, "event.bind", token, event="ONCRMDEALUPDATE", handler=receiver.url("/as2"), auth_type=2)
    rest(sandbox, "event.bind", token, event="ONCRMDEALUPDATE", event_type="offline")
    deal_id = sandbox.call("crm.deal.add", {"fields": {"TITLE": "Order"}}).json()["result"]

    # Moved by automation (no user named): auth holds no tokens and no user_id.
    sandbox.control("POST", f"/_sandbox/deals/{deal_id}/stage", {"stage_id": "PREPARATION"})
    (request,) = receiver.wait_for(1, path="/deals")
    assert request["form"][:4] == [
        ("event", "ONCRMDEALUPDATE"),
        ("event_handler_id", request["form"][1][1]),
        ("data[FIELDS][ID]", str(deal_id)),
        ("ts", request["form"][3][1]),
    ]
    assert [k for k, _ in request["form"][4:]] == [f"auth[{k}]" for k in BARE_AUTH_KEYS]
    assert form(request)["auth[application_token]"] == installed["auth[application_token]"]
    # A binding with an explicit auth_type still gets its user's tokens. [inferred]
    (as2,) = receiver.wait_for(1, path="/as2")
    assert form(as2)["auth[user_id]"] == "2"
    # The offline queue records no acting user.
    (queued,) = rest(sandbox, "event.offline.get", token).json()["result"]["events"]
    assert queued["EVENT_ADDITIONAL"] is False

    # Moved by a named user, as in the kanban: that user's tokens.
    sandbox.control("POST", f"/_sandbox/deals/{deal_id}/stage", {"stage_id": "EXECUTING", "user_id": 2})
    second = receiver.wait_for(2, path="/deals")[1]
    assert [k for k, _ in second["form"][4:]] == [f"auth[{k}]" for k in EVENT_AUTH_KEYS]
    assert form(second)["auth[user_id]"] == "2"
    (queued,) = rest(sandbox, "event.offline.get", token).json()["result"]["events"]
    assert queued["EVENT_ADDITIONAL"] == {"user_id": "2"}
    deal = sandbox.call("crm.deal.get", {"id": deal_id}).json()["result"]
    assert (deal["STAGE_ID"], deal["MOVED_BY_ID"]) == ("EXECUTING", "2")


def test_listeners_may_ask_for_the_actor(sandbox: LiveSandbox) -> None:
    seen: list[tuple[str, int | None]] = []

    def listener(
        _sb: Any, entity: str, action: str, rid: int, before: Any, after: Any, *, actor_user_id: int | None = None
    ) -> None:
        seen.append((action, actor_user_id))

    sandbox.portal.crm_listeners.append(listener)
    try:
        deal_id = sandbox.call("crm.deal.add", {"fields": {"TITLE": "x"}}).json()["result"]
        sandbox.control("POST", f"/_sandbox/deals/{deal_id}/stage", {"stage_id": "PREPARATION"})
        sandbox.control("POST", f"/_sandbox/deals/{deal_id}/stage", {"stage_id": "EXECUTING", "user_id": 2})
    finally:
        sandbox.portal.crm_listeners.remove(listener)
    assert seen == [("ADD", 1), ("UPDATE", None), ("UPDATE", 2)]
