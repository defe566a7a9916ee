"""A running sandbox portal and a running b24bridge, both real HTTP servers on loopback."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, Self

import httpx
import psycopg
import pytest

from b24bridge.app import create_service
from b24bridge.composition import Services, open_services
from b24bridge.portals import crypto
from b24bridge.server import server_options
from b24bridge.settings import Settings
from tests.livehttp import LiveServer, serve, serve_many
from tests.sandbox.conftest import LiveSandbox

KEY = "k1:" + crypto.new_key()


@pytest.fixture(scope="module")
def portals_db(make_migrated_database: Callable[[], str]) -> str:
    """A database of this module's own: the sandbox's member_id is the same in every test."""
    return make_migrated_database()


@pytest.fixture(scope="module")
def _portal_sandbox() -> Iterator[LiveSandbox]:
    yield from serve(LiveSandbox(limits_enabled=False))


def fresh(sandbox: LiveSandbox, database_url: str, tables: tuple[str, ...]) -> LiveSandbox:
    """Reset the sandbox and empty ``tables`` (in that order) of the bridge's database."""
    sandbox.reset()
    with psycopg.connect(database_url, autocommit=True) as conn:
        for table in tables:
            conn.execute(f"DELETE FROM {table}")
    return sandbox


@pytest.fixture
def sandbox(_portal_sandbox: LiveSandbox, portals_db: str) -> LiveSandbox:
    return fresh(_portal_sandbox, portals_db, ("portal_events", "portals"))


class Bridge:
    """b24bridge served by uvicorn; ``app`` is the sandbox application it is."""

    def __init__(self, sandbox: LiveSandbox, database_url: str, data_dir: Path, **app: Any) -> None:
        self.sandbox = sandbox
        self.database_url = database_url
        self.data_dir = data_dir
        self.server: LiveServer | None = None
        self.public_url = ""
        self.app: dict[str, Any] = {}
        self.app_options = app

    def settings(self, port: int | None = None, **overrides: Any) -> Settings:
        base = f"http://127.0.0.1:{port}" if port else None
        values: dict[str, Any] = {
            "database_url": self.database_url,
            "data_dir": self.data_dir,
            "app_client_id": self.app.get("client_id"),
            "app_client_secret": self.app.get("client_secret"),
            "oauth_server": self.sandbox.base_url,
            "public_url": base or self.public_url,
            "encryption_keys": KEY,
            "worker_in_process": False,
        }
        return Settings(**{**values, **overrides})

    def start(self) -> Self:
        options: dict[str, Any] = {}

        def factory(port: int) -> Any:
            base = f"http://127.0.0.1:{port}"
            self.app = self.sandbox.control(
                "POST",
                "/_sandbox/apps",
                {
                    "name": "b24bridge",
                    "scopes": ["crm", "bizproc", "user"],
                    "install_url": f"{base}/install",
                    "redirect_url": f"{base}/oauth/callback",
                    **self.app_options,
                },
            )
            settings = self.settings(port)
            options.update(server_options(settings.body_read_timeout))
            return create_service(settings)

        # The stack `serve` runs: the app behind the door, on the same server options.
        self.server = LiveServer(factory, options)
        self.public_url = self.server.base_url
        self.http = httpx.Client(base_url=self.base_url, timeout=30)
        return self

    @property
    def base_url(self) -> str:
        assert self.server is not None
        return self.server.base_url

    def install(self) -> dict[str, Any]:
        result: dict[str, Any] = self.sandbox.control("POST", f"/_sandbox/apps/{self.app['client_id']}/install")
        return result

    def wait_bound(self, event: str = "ONAPPUNINSTALL", timeout: float = 10) -> None:
        """Until the background step after installation has bound ``event`` in the sandbox."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            bindings = self.sandbox.portal.world.event_bindings
            if any(b["client_id"] == self.app["client_id"] and b["event"] == event for b in bindings):
                return
            time.sleep(0.02)
        raise AssertionError(f"{event} was not bound")

    def stop(self) -> None:
        if self.server is not None:
            self.http.close()
            self.server.stop()
            self.server = None

    @asynccontextmanager
    async def services(self, **overrides: Any) -> AsyncIterator[Services]:
        """The services in the test's own loop (while the server is stopped, so no two processes' worth run)."""
        assert self.server is None, "stop the server first"
        async with open_services(self.settings(**overrides)) as services:
            yield services


@pytest.fixture
def bridge_factory(sandbox: LiveSandbox, portals_db: str, tmp_path: Path) -> Iterator[Callable[..., Bridge]]:
    yield from serve_many(lambda **app: Bridge(sandbox, portals_db, tmp_path, **app).start())


@pytest.fixture
def bridge(bridge_factory: Callable[..., Bridge]) -> Bridge:
    return bridge_factory(api_only=True)


def rows(database_url: str, sql: str, *args: Any) -> list[dict[str, Any]]:
    with psycopg.connect(database_url) as conn, conn.cursor(row_factory=psycopg.rows.dict_row) as cur:
        cur.execute(sql, args)
        return list(cur.fetchall())


def dump_text(database_url: str) -> str:
    """Every text-ish column of portals and portal_events, as a database dump would show them."""
    with psycopg.connect(database_url) as conn:
        out = []
        for table in ("portals", "portal_events"):
            for row in conn.execute(f"SELECT t::text FROM {table} t"):  # the whole row as text, like pg_dump
                out.append(str(row[0]))
    return "\n".join(out)
