from tests.sandbox.conftest import LiveSandbox


def test_webhook_call_has_portal_envelope(sandbox: LiveSandbox) -> None:
    response = sandbox.call("user.current")
    assert response.status_code == 200
    body = response.json()
    assert body["result"]["ID"] == "1"
    assert set(body["time"]) >= {"start", "finish", "duration", "processing", "date_start", "date_finish"}
