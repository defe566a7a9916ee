"""Shared fixtures: a real PostgreSQL for the session, Redis when one is configured, an app handler endpoint.

Sandbox fixtures live in ``tests/sandbox/conftest.py``.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import psycopg
import pytest
from hypothesis import settings as hypothesis_settings
from psycopg import sql

from b24bridge import migrations
from b24bridge.db import Database, EmbeddedPostgres, libpq_url
from b24bridge.settings import Settings
from tests.livehttp import Receiver, serve

# Property tests find the same thing every run: their cases follow from each test's own code (tests/fuzzing.py says
# how the schemathesis fuzz tests are seeded, and where what they find is kept).
hypothesis_settings.register_profile("b24bridge", derandomize=True)
hypothesis_settings.load_profile("b24bridge")


def with_dbname(url: str, dbname: str) -> str:
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path=f"/{dbname}"))


@pytest.fixture(scope="session")
def pg_admin_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """URL of a server where tests may create databases.

    ``B24BRIDGE_TEST_DATABASE_URL`` names an existing server (CI); otherwise a private embedded
    PostgreSQL is started once for the session.
    """
    external = os.environ.get("B24BRIDGE_TEST_DATABASE_URL")
    if external:
        yield libpq_url(external)
        return
    # Not under pytest's tmp_path: pytest makes its root private (0700) at every session start, and the embedded
    # server runs as another user when the tests run as root.
    server = EmbeddedPostgres(Path(tempfile.mkdtemp(prefix="b24bridge-test-pg-")) / "pg")
    try:
        yield server.start()
    finally:
        server.stop()


@pytest.fixture
def embedded_dir() -> Iterator[Path]:
    """A data folder for an embedded PostgreSQL, outside pytest's private tmp root (see ``pg_admin_url``)."""
    path = Path(tempfile.mkdtemp(prefix="b24bridge-test-data-"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="session")
def make_database(pg_admin_url: str) -> Iterator[Callable[[], str]]:
    """Factory creating a fresh, empty, uniquely named database; all are dropped after the session."""
    created: list[str] = []

    def make() -> str:
        name = f"b24bridge_test_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(pg_admin_url, autocommit=True) as conn:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        created.append(name)
        return with_dbname(pg_admin_url, name)

    yield make
    with psycopg.connect(pg_admin_url, autocommit=True) as conn:
        for name in created:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


@pytest.fixture(scope="session")
def make_migrated_database(make_database: Callable[[], str]) -> Callable[[], str]:
    """Factory creating a fresh database with all migrations applied."""

    def make() -> str:
        url = make_database()
        migrations.upgrade(url)
        return url

    return make


@pytest.fixture(scope="session")
def database_url(make_migrated_database: Callable[[], str]) -> str:
    """A database for this test session with all migrations applied."""
    return make_migrated_database()


@pytest.fixture(scope="session")
async def database(database_url: str, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Database]:
    """A started :class:`Database` (pool open) on ``database_url``."""
    settings = Settings(database_url=database_url, data_dir=tmp_path_factory.mktemp("data"))
    async with Database(settings) as db:
        yield db


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    # A test that needs Redis says so with the marker, so `-m "not redis"` selects what runs without it.
    for item in items:
        if "redis_url" in getattr(item, "fixturenames", ()) and item.get_closest_marker("redis") is None:
            raise pytest.UsageError(f"{item.nodeid} uses redis_url: mark it @pytest.mark.redis")


@pytest.fixture
def redis_url() -> str:
    url = os.environ.get("B24BRIDGE_TEST_REDIS_URL")
    if not url:
        pytest.skip("B24BRIDGE_TEST_REDIS_URL not set: Redis cases need a Redis server")
    return url


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    """An application's handler endpoint on loopback, recording every request."""
    yield from serve(Receiver())
