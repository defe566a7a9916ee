"""b24bridge with its admin side, over real HTTP on loopback.

``serve_admin`` starts the stack ``serve`` runs with no portal at all, for the door (tokens, the loopback rule,
cookies, CSRF). The bridge between two sandbox portals (tests/bridge_flows) gives runs worth looking at: its replay
test's route file maps only one source stage, so a deal at another stage makes a dead run, and the fixed file
delivers it on replay.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from b24bridge.app import create_service
from b24bridge.server import server_options
from b24bridge.settings import Settings
from tests.bridge_flows.conftest import (
    KEY,
    BridgeService,
    bridge_db,
    bridge_factory,
    cloud,
    move,
    new_deal,
    portals,
    webhook_rule,
)
from tests.bridge_flows.test_replay import BROKEN, FIXED
from tests.livehttp import LiveServer, serve_many

__all__ = ["BROKEN", "FIXED", "bridge_db", "bridge_factory", "cloud", "portals"]  # fixtures are used by name

TOKEN = secrets.token_urlsafe(32)
ROUTE = "partner-to-acme"
MAPPED_STAGE = "EXECUTING"  # the broken route maps only this source stage: a deal at any other one ends dead


def bearer(token: str = TOKEN) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture(scope="module")
def admin_db(make_migrated_database: Callable[[], str]) -> str:
    return make_migrated_database()


@pytest.fixture
def serve_admin(admin_db: str, tmp_path: Path) -> Iterator[Callable[..., LiveServer]]:
    """``serve_admin(**settings)``: b24bridge on a free loopback port (worker off, no portals); without
    ``database_url=None`` on the module's database, with it on an embedded one in a data folder of its own."""

    def start(**values: Any) -> LiveServer:
        options: dict[str, Any] = {}

        def factory(port: int) -> Any:
            settings = Settings(
                **{
                    "database_url": admin_db,
                    "data_dir": tmp_path,
                    "encryption_keys": KEY,
                    "worker_in_process": False,
                    **values,
                }
            )
            options.update(server_options(settings.body_read_timeout))
            return create_service(settings)

        return LiveServer(factory, options)

    yield from serve_many(start)


def login(base_url: str, token: str = TOKEN) -> httpx.Client:
    """A client logged in to the admin page (its session cookie kept)."""
    client = httpx.Client(base_url=base_url, timeout=30)
    answer = client.post("/admin/login", data={"token": token})
    assert answer.status_code == 303, answer.text
    return client


def altered(text: str) -> str:
    """``text`` with its last character changed (a hex digit stays one)."""
    return text[:-1] + ("1" if text[-1] == "0" else "0")


def csrf_of(page: str) -> str:
    """The CSRF token of a page's session (what its forms and htmx requests carry)."""
    found = re.search(r'hx-headers=\'\{"X-CSRF-Token": "([^"]+)"\}\'', page)
    assert found is not None, "no CSRF token on the page"
    return found.group(1)


def dead_and_delivered(
    bridge: BridgeService, dead: int = 1, delivered: int = 1
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Runs of the broken route: ``dead`` deals at a stage it cannot map, ``delivered`` at the one it maps; the dead
    runs and the delivered ones, each by id (the hooks arrive in any order)."""
    webhook_rule(bridge.source, bridge.hook_url(ROUTE))
    webhook_rule(bridge.source, bridge.hook_url(ROUTE), stage=MAPPED_STAGE)
    for number in range(dead):
        move(bridge.source, new_deal(bridge.source, TITLE=f"Needs a fix {number + 1}"))
    for number in range(delivered):
        move(bridge.source, new_deal(bridge.source, TITLE=f"Order {number + 1}"), MAPPED_STAGE)
    runs = bridge.settled_runs(dead + delivered)
    return [run for run in runs if run["status"] == "dead"], [run for run in runs if run["status"] == "succeeded"]
