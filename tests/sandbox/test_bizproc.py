"""bizproc.robot.* / bizproc.activity.* / bizproc.event.send over real HTTP (REFERENCE 5.1-5.6)."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from tests.sandbox.conftest import LiveSandbox
from tests.sandbox.helpers import app_token

HANDLER = "https://app.example.com/robots/send_sms"


def rest(sandbox: LiveSandbox, auth: str, method: str, params: dict[str, Any] | None = None) -> httpx.Response:
    return sandbox.http.post(f"/rest/{method}", json={**(params or {}), "auth": auth})


def robot(**overrides: Any) -> dict[str, Any]:
    params: dict[str, Any] = {
        "CODE": "send_sms",
        "HANDLER": HANDLER,
        "AUTH_USER_ID": 1,
        "USE_SUBSCRIPTION": "Y",
        "NAME": {"en": "Send SMS"},
        "PROPERTIES": {"phone": {"Name": "Phone", "Type": "string"}},
        "RETURN_PROPERTIES": {"message_id": {"Name": "Message ID", "Type": "string"}},
    }
    params.update(overrides)
    return {k: v for k, v in params.items() if v is not None}


@pytest.fixture
def token(sandbox: LiveSandbox) -> str:
    return app_token(sandbox)


def error_of(response: httpx.Response) -> tuple[int, str, str]:
    body = response.json()
    return response.status_code, body["error"], body["error_description"]


V = "ERROR_ACTIVITY_VALIDATION_FAILURE"
W = "ERROR_WRONG_HANDLER_URL"


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        ({}, (400, V, "Empty data!")),
        (robot(CODE=None), (400, V, "Empty activity code!")),
        (robot(CODE="0"), (400, V, "Empty activity code!")),
        (robot(CODE="send sms"), (400, V, "Wrong activity code!")),
        (robot(CODE="sms/robot"), (400, V, "Wrong activity code!")),
        (robot(CODE=123), (400, V, "Wrong activity code!")),
        (robot(HANDLER=None), (400, "ERROR_WRONG_HANDLER_URL", "Wrong handler URL")),
        (robot(HANDLER="https://localhost/robot"), (400, "ERROR_WRONG_HANDLER_URL", "Wrong handler URL")),
        (robot(HANDLER="app.example.com/robot"), (400, "ERROR_WRONG_HANDLER_URL", "Wrong handler URL")),
        (robot(HANDLER="ftp://app.example.com/r"), (400, "ERROR_UNSUPPORTED_PROTOCOL", "Unsupported handler protocol")),
        (robot(NAME=None), (400, V, "Empty activity NAME!")),
        (robot(NAME=""), (400, V, "Empty activity NAME!")),
        (robot(PROPERTIES="phone"), (400, V, "Wrong properties array!")),
        (robot(RETURN_PROPERTIES="x"), (400, V, "Wrong properties array!")),
        (robot(PROPERTIES={"1phone": {"Name": "P"}}), (400, V, "Wrong property key (1phone)!")),
        (robot(PROPERTIES={"ph-one": {"Name": "P"}}), (400, V, "Wrong property key (ph-one)!")),
        (robot(PROPERTIES=[{"Name": "P"}]), (400, V, "Wrong property key (0)!")),
        (robot(PROPERTIES={"phone": {"Type": "string"}}), (400, V, "Empty property NAME (phone)!")),
        (robot(RETURN_PROPERTIES={"ok": {"name": ""}}), (400, V, "Empty property NAME (ok)!")),
        (robot(DOCUMENT_TYPE="DEAL"), (400, V, "Wrong activity DOCUMENT_TYPE!")),
        (robot(DOCUMENT_TYPE=["crm", "CCrmDocumentDeal"]), (400, V, "Wrong activity DOCUMENT_TYPE!")),
        (robot(FILTER="b24"), (400, V, "Wrong activity FILTER!")),
        (robot(USE_PLACEMENT="Y"), (400, "ERROR_WRONG_HANDLER_URL", "Wrong handler URL")),
    ],
)
def test_robot_add_validation(sandbox: LiveSandbox, token: str, params: dict[str, Any], expected: Any) -> None:
    assert error_of(rest(sandbox, token, "bizproc.robot.add", params)) == expected


def test_robot_add_checks_in_portal_order(sandbox: LiveSandbox, token: str) -> None:
    # Code before handler before name: the first failing check wins.
    response = rest(sandbox, token, "bizproc.robot.add", {"CODE": "bad code", "HANDLER": "x"})
    assert error_of(response) == (400, V, "Wrong activity code!")
    response = rest(sandbox, token, "bizproc.robot.add", {"CODE": "ok", "HANDLER": "ftp://a.b/c"})
    assert error_of(response)[1] == "ERROR_UNSUPPORTED_PROTOCOL"


def test_robot_lifecycle(sandbox: LiveSandbox, token: str) -> None:
    ok = rest(sandbox, token, "bizproc.robot.add", robot(DOCUMENT_TYPE=["crm", "CCrmDocumentDeal", "DEAL"]))
    assert ok.status_code == 200 and ok.json()["result"] is True
    assert ok.headers["X-Bitrix-Rest-Application"] == sandbox.client_id
    again = rest(sandbox, token, "bizproc.robot.add", robot())
    assert error_of(again) == (400, "ERROR_ACTIVITY_ALREADY_INSTALLED", "Activity or Robot already installed!")
    # CODE is case-sensitive (the portal keys robots by md5(APP_ID@CODE)).
    assert rest(sandbox, token, "bizproc.robot.add", robot(CODE="Send_SMS")).json()["result"] is True
    assert rest(sandbox, token, "bizproc.robot.list").json()["result"] == ["send_sms", "Send_SMS"]

    update = {"CODE": "send_sms", "FIELDS": {"NAME": "Send message", "USE_SUBSCRIPTION": "N"}}
    assert rest(sandbox, token, "bizproc.robot.update", update).json()["result"] is True
    stored = sandbox.portal.world.robots[f"{sandbox.client_id}|send_sms"]
    assert stored["NAME"] == "Send message" and stored["USE_SUBSCRIPTION"] == "N"
    assert stored["PROPERTIES"]["phone"]["NAME"] == "Phone"  # property ids keep case, their keys go upper

    assert rest(sandbox, token, "bizproc.robot.delete", {"code": "send_sms"}).json()["result"] is True
    assert rest(sandbox, token, "bizproc.robot.list").json()["result"] == ["Send_SMS"]
    missing = rest(sandbox, token, "bizproc.robot.delete", {"CODE": "send_sms"})
    assert error_of(missing) == (400, "ERROR_ACTIVITY_NOT_FOUND", "Activity or Robot not found!")


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        ({"CODE": "nope", "FIELDS": {"NAME": "x"}}, (400, "ERROR_ACTIVITY_NOT_FOUND", "Activity or Robot not found!")),
        ({"FIELDS": {"NAME": "x"}}, (400, V, "Empty activity code!")),
        ({"CODE": "send_sms"}, (400, V, "No fields to update")),
        ({"CODE": "send_sms", "FIELDS": {"UNKNOWN": 1}}, (400, V, "No fields to update")),
        ({"CODE": "send_sms", "FIELDS": {"NAME": ""}}, (400, V, "No fields to update")),
        ({"CODE": "send_sms", "FIELDS": {"HANDLER": "http://localhost/"}}, (400, W, "Wrong handler URL")),
        ({"CODE": "send_sms", "FIELDS": {"PROPERTIES": {"a b": {"Name": "x"}}}}, (400, V, "Wrong property key (a b)!")),
        ({"CODE": "send_sms", "FIELDS": {"FILTER": "box"}}, (400, V, "Wrong activity FILTER!")),
        ({"CODE": "send_sms", "FIELDS": {"DOCUMENT_TYPE": ["crm"]}}, (400, V, "Wrong activity DOCUMENT_TYPE!")),
    ],
)  # fmt: skip
def test_robot_update_errors(sandbox: LiveSandbox, token: str, params: dict[str, Any], expected: Any) -> None:
    assert rest(sandbox, token, "bizproc.robot.add", robot()).status_code == 200
    assert error_of(rest(sandbox, token, "bizproc.robot.update", params)) == expected
    # A failed update writes nothing.
    # (NAME's language keys are upper-cased like every key outside PROPERTIES maps: prepareActivityData.)
    assert sandbox.portal.world.robots[f"{sandbox.client_id}|send_sms"]["NAME"] == {"EN": "Send SMS"}


def test_webhook_and_non_admin_are_denied(sandbox: LiveSandbox, token: str) -> None:
    for method in ("bizproc.robot.add", "bizproc.robot.list", "bizproc.activity.add"):
        response = sandbox.call(method, robot())
        assert error_of(response) == (403, "ACCESS_DENIED", "Access denied! Application context required")
    employee = app_token(sandbox, user_id=2)
    for method in ("bizproc.robot.add", "bizproc.robot.list", "bizproc.robot.delete"):
        assert error_of(rest(sandbox, employee, method, robot())) == (403, "ACCESS_DENIED", "Access denied!")


def test_activities_share_the_table_but_not_the_lists(sandbox: LiveSandbox, token: str) -> None:
    assert rest(sandbox, token, "bizproc.activity.add", robot(CODE="act")).json()["result"] is True
    assert rest(sandbox, token, "bizproc.robot.add", robot(CODE="rob")).json()["result"] is True
    assert rest(sandbox, token, "bizproc.activity.list").json()["result"] == ["act"]
    assert rest(sandbox, token, "bizproc.robot.list").json()["result"] == ["rob"]
    clash = rest(sandbox, token, "bizproc.robot.add", robot(CODE="act"))
    assert error_of(clash)[1] == "ERROR_ACTIVITY_ALREADY_INSTALLED"
    # update/delete filter by IS_ROBOT: an activity is not a robot.
    assert error_of(rest(sandbox, token, "bizproc.robot.delete", {"CODE": "act"}))[1] == "ERROR_ACTIVITY_NOT_FOUND"
    assert rest(sandbox, token, "bizproc.activity.delete", {"CODE": "act"}).json()["result"] is True


def test_placement_handler(sandbox: LiveSandbox, token: str) -> None:
    first = robot(CODE="one", USE_PLACEMENT="Y", PLACEMENT_HANDLER="https://app.example.com/settings")
    assert rest(sandbox, token, "bizproc.robot.add", first).json()["result"] is True
    second = robot(CODE="two", USE_PLACEMENT="Y", PLACEMENT_HANDLER="https://app.example.com/settings")
    assert error_of(rest(sandbox, token, "bizproc.robot.add", second)) == (
        400,
        "ERROR_CORE",
        "Unable to set placement handler: Handler already binded",
    )


def test_event_send_and_log_reject_bad_tokens(sandbox: LiveSandbox, token: str) -> None:
    forged = "55c1dc1c3f0d75.78875596|A51601_82584_96831_81132|hsyUws1j4XiwqPqN45eH66CcQtEvpUIP." + "0" * 64
    for method in ("bizproc.event.send", "bizproc.activity.log"):
        for bad in (forged, "garbage", None):
            params = {"EVENT_TOKEN": bad, "LOG_MESSAGE": "x"} if bad else {"LOG_MESSAGE": "x"}
            assert error_of(rest(sandbox, token, method, params)) == (403, "ACCESS_DENIED", "Access denied!")


def test_robot_add_form_encoded_with_php_brackets(sandbox: LiveSandbox, token: str) -> None:
    form = {
        "code": "form_robot",
        "handler": HANDLER,
        "name[en]": "Form robot",
        "properties[phone][Name]": "Phone",
        "properties[phone][Options][sms]": "SMS",
        "document_type[]": ["crm", "CCrmDocumentDeal", "DEAL"],
    }
    response = sandbox.http.post(f"/rest/bizproc.robot.add?auth={token}", data=form)
    assert response.status_code == 200, response.text
    stored = sandbox.portal.world.robots[f"{sandbox.client_id}|form_robot"]
    # Keys go upper-case except property ids and option values (prepareActivityData).
    assert stored["PROPERTIES"] == {"phone": {"NAME": "Phone", "OPTIONS": {"sms": "SMS"}}}
    assert stored["DOCUMENT_TYPE"] == ["crm", "CCrmDocumentDeal", "DEAL"]
    assert stored["AUTH_USER_ID"] == 0 and stored["USE_SUBSCRIPTION"] == ""


def test_non_ascii_event_token_is_denied_not_crashed(sandbox: LiveSandbox, token: str) -> None:
    response = rest(sandbox, token, "bizproc.event.send", {"EVENT_TOKEN": "a|b|c.подпись"})
    assert error_of(response) == (403, "ACCESS_DENIED", "Access denied!")
