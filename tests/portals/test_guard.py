"""The allowance of unconfirmed installations (portals/guard.py), on a clock of the test's own."""

from __future__ import annotations

import pytest

from b24bridge.portals import guard
from b24bridge.portals.guard import InstallGuard, address_key
from b24bridge.portals.schemas import InstallError


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def refused_status(check: InstallGuard, address: str, member_id: str, secret: str) -> int | None:
    try:
        check.admit(address, member_id, secret)
    except InstallError as exc:
        return exc.status
    return None


def test_each_address_and_each_portal_has_its_allowance_refilled_over_time() -> None:
    clock = Clock()
    check = InstallGuard(per_address=(3, 60.0), per_portal=(2, 60.0), clock=clock)
    assert [refused_status(check, "10.0.0.1", f"m{i}", f"t{i}") for i in range(4)] == [None, None, None, 429]
    # Another address may still try, but not for a portal whose own allowance is spent.
    assert [refused_status(check, f"10.0.0.{9 + i}", "victim", f"v{i}") for i in range(3)] == [None, None, 429]
    clock.now += 20  # a third of the period: one attempt back
    assert refused_status(check, "10.0.0.1", "m9", "t9") is None
    assert refused_status(check, "10.0.0.1", "m10", "t10") == 429


def test_a_confirmed_install_gives_its_attempt_back_and_a_refused_token_is_remembered() -> None:
    clock = Clock()
    check = InstallGuard(per_address=(2, 600.0), per_portal=(2, 600.0), clock=clock)
    for i in range(10):  # genuine installs from one queue server's address never run out
        check.confirmed(check.admit("192.0.2.1", f"portal{i}", f"genuine{i}"))
    check.refused(check.admit("192.0.2.2", "victim", "forged"))
    assert refused_status(check, "192.0.2.3", "victim", "forged") == 401  # without asking the OAuth server
    clock.now += guard.REFUSED_MEMORY + 1
    assert refused_status(check, "192.0.2.3", "victim", "forged") is None


@pytest.mark.parametrize(
    ("address", "key"),
    [
        ("2001:db8:1:2:aaaa::1", "2001:db8:1:2::/64"),
        ("2001:db8:1:2:bbbb::9", "2001:db8:1:2::/64"),
        ("::ffff:192.0.2.7", "192.0.2.7"),
        ("192.0.2.7", "192.0.2.7"),
        (None, "unknown"),
    ],
)
def test_an_ipv6_host_counts_by_its_64(address: str | None, key: str) -> None:
    assert address_key(address) == key


def test_memory_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(guard, "MAX_ENTRIES", 100)
    check = InstallGuard(per_address=(1, 600.0), per_portal=(1, 600.0), clock=Clock())
    for i in range(1000):
        check.refused(check.admit(f"10.1.{i // 250}.{i % 250}", f"m{i}", f"t{i}"))
    sizes = [len(check.by_address._levels), len(check.by_portal._levels), len(check._refused)]
    assert sizes == [100, 100, 100]
