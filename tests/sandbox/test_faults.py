"""Conformance of the fault injector (``/_sandbox/faults``): reproducible, honours its rates, faults look like the
network and the gateway do (a dropped connection is a transport error, not a status)."""

from __future__ import annotations

import time
from typing import Any

import httpx
import pytest

from tests.sandbox.conftest import LiveSandbox


def outcome(sandbox: LiveSandbox, method: str = "user.current", params: dict[str, Any] | None = None) -> str:
    try:
        response = sandbox.call(method, params)
    except (httpx.RemoteProtocolError, httpx.ReadError):
        return "drop"
    return str(response.status_code)


def run(sandbox: LiveSandbox, settings: dict[str, Any], calls: int) -> list[str]:
    sandbox.control("POST", "/_sandbox/faults", settings)
    return [outcome(sandbox) for _ in range(calls)]


MIXED = {"error_500_rate": 0.2, "error_503_rate": 0.2, "drop_rate": 0.2, "drop_phase": "random"}


def test_same_seed_same_sequence(sandbox: LiveSandbox) -> None:
    first = run(sandbox, {**MIXED, "seed": 42}, 60)
    second = run(sandbox, {**MIXED, "seed": 42}, 60)
    assert first == second
    assert {"200", "500", "503", "drop"} <= set(first)
    other = run(sandbox, {**MIXED, "seed": 7}, 60)
    assert other != first


def test_same_seed_same_sequence_across_portals(sandbox_factory: Any) -> None:
    sequences = []
    for _ in range(2):
        portal = sandbox_factory(limits_enabled=False, seed=99)
        sequences.append(run(portal, {"error_500_rate": 0.5}, 40))
        portal.stop()
    assert sequences[0] == sequences[1]
    assert "500" in sequences[0] and "200" in sequences[0]


def test_rates_are_roughly_honoured(sandbox: LiveSandbox) -> None:
    outcomes = run(sandbox, {"error_500_rate": 0.2, "error_503_rate": 0.1, "drop_rate": 0.05, "seed": 3}, 400)
    counts = {k: outcomes.count(k) for k in ("200", "500", "503", "drop")}
    # binomial, n=400: +-4 standard deviations
    assert 48 <= counts["500"] <= 112, counts
    assert 16 <= counts["503"] <= 64, counts
    assert 3 <= counts["drop"] <= 38, counts
    assert counts["200"] + counts["500"] + counts["503"] + counts["drop"] == 400
    described = sandbox.control("GET", "/_sandbox/faults")
    injected = described["injected"]
    assert injected.get("error_500", 0) == counts["500"]
    assert injected.get("error_503", 0) == counts["503"]
    assert injected.get("drop_before", 0) + injected.get("drop_after", 0) == counts["drop"]
    assert described["seed"] == 3
    assert described["spec"]["error_500_rate"] == 0.2


def test_fault_shapes(sandbox: LiveSandbox) -> None:
    sandbox.control("POST", "/_sandbox/faults", {"error_500_rate": 1.0})
    r500 = sandbox.call("user.current")
    assert r500.status_code == 500
    assert r500.json() == {"error": "INTERNAL_SERVER_ERROR", "error_description": "Internal server error"}
    sandbox.control("POST", "/_sandbox/faults", {"error_503_rate": 1.0})
    r503 = sandbox.call("user.current")
    assert r503.status_code == 503
    assert r503.headers["content-type"].startswith("text/html")  # the gateway answers, not the portal
    sandbox.control("POST", "/_sandbox/faults", {"drop_rate": 1.0, "drop_phase": "before"})
    with pytest.raises((httpx.RemoteProtocolError, httpx.ReadError)):
        sandbox.call("user.current")


def test_delete_clears_faults(sandbox: LiveSandbox) -> None:
    sandbox.control("POST", "/_sandbox/faults", {"error_500_rate": 1.0})
    assert sandbox.call("user.current").status_code == 500
    cleared = sandbox.control("DELETE", "/_sandbox/faults")
    assert cleared["spec"]["error_500_rate"] == 0.0
    assert cleared["injected"] == {}
    assert sandbox.call("user.current").status_code == 200


def test_faults_limited_to_methods(sandbox: LiveSandbox) -> None:
    sandbox.control("POST", "/_sandbox/faults", {"error_500_rate": 1.0, "methods": ["Profile"]})
    assert sandbox.call("user.current").status_code == 200
    assert sandbox.call("profile").status_code == 500
    assert sandbox.call("PROFILE").status_code == 500


def _contacts(sandbox: LiveSandbox) -> int:
    total: int = sandbox.call("crm.contact.list").json()["total"]
    return total


@pytest.mark.parametrize(("phase", "written"), [("before", 0), ("after", 1)])
def test_drop_phase_decides_whether_the_write_happened(sandbox: LiveSandbox, phase: str, written: int) -> None:
    sandbox.control("POST", "/_sandbox/faults", {"drop_rate": 1.0, "drop_phase": phase, "methods": ["crm.contact.add"]})
    with pytest.raises((httpx.RemoteProtocolError, httpx.ReadError)):
        sandbox.call("crm.contact.add", {"fields": {"NAME": "Lost"}})
    assert _contacts(sandbox) == written
    assert sandbox.control("GET", "/_sandbox/faults")["injected"] == {f"drop_{phase}": 1}


def test_latency(sandbox: LiveSandbox) -> None:
    started = time.monotonic()
    sandbox.call("user.current")
    baseline = time.monotonic() - started
    sandbox.control("POST", "/_sandbox/faults", {"latency_ms": 400, "latency_jitter_ms": 100})
    started = time.monotonic()
    assert sandbox.call("user.current").status_code == 200
    delayed = time.monotonic() - started
    assert delayed >= 0.4, delayed
    assert delayed - baseline < 5  # generous: a noisy machine, but not unbounded


def test_outage_window_on_sandbox_clock(sandbox: LiveSandbox) -> None:
    now = sandbox.control("POST", "/_sandbox/clock", {"advance": 0})["now"]
    sandbox.control("POST", "/_sandbox/faults", {"outage_start": now - 1, "outage_end": now + 100})
    assert [sandbox.call("user.current").status_code for _ in range(3)] == [503, 503, 503]
    sandbox.control("POST", "/_sandbox/clock", {"advance": 101})
    assert sandbox.call("user.current").status_code == 200
    assert sandbox.control("GET", "/_sandbox/faults")["injected"] == {"outage": 3}


def test_outage_in_the_future_then_recovers(sandbox: LiveSandbox) -> None:
    now = sandbox.control("POST", "/_sandbox/clock", {"advance": 0})["now"]
    sandbox.control("POST", "/_sandbox/faults", {"outage_start": now + 50, "outage_end": now + 100})
    assert sandbox.call("user.current").status_code == 200
    sandbox.control("POST", "/_sandbox/clock", {"advance": 60})
    assert sandbox.call("user.current").status_code == 503
    sandbox.control("POST", "/_sandbox/clock", {"advance": 50})
    assert sandbox.call("user.current").status_code == 200


def test_outage_seconds_shortcut_starts_now_on_the_sandbox_clock(sandbox: LiveSandbox) -> None:
    response = sandbox.http.post("/_sandbox/faults?outage_seconds=60", json={})
    assert response.status_code == 200
    assert sandbox.call("user.current").status_code == 503
    sandbox.control("POST", "/_sandbox/clock", {"advance": 59})
    assert sandbox.call("user.current").status_code == 503
    sandbox.control("POST", "/_sandbox/clock", {"advance": 2})
    assert sandbox.call("user.current").status_code == 200


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"error_500_rate": 1.5}, "error_500_rate must be between 0 and 1"),
        ({"drop_rate": -0.1}, "drop_rate must be between 0 and 1"),
        ({"error_500_rate": 0.6, "error_503_rate": 0.6}, "must not exceed 1"),
        ({"latency_ms": -5}, "must not be negative"),
        ({"drop_phase": "middle"}, "drop_phase must be one of"),
        ({"bogus": 1}, "unknown fault settings ['bogus']"),
        ({"error_500_rate": "often"}, "error_500_rate must be a number"),
        ({"methods": "user.current"}, "methods must be a list of method names"),
    ],
)
def test_invalid_fault_settings(sandbox: LiveSandbox, settings: dict[str, Any], message: str) -> None:
    response = sandbox.http.post("/_sandbox/faults", json=settings)
    assert response.status_code == 400
    assert message in response.json()["error"]
    # the previous (empty) configuration is kept
    assert sandbox.control("GET", "/_sandbox/faults")["spec"]["error_500_rate"] == 0.0
