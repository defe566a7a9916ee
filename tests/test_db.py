from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import Callable
from pathlib import Path

import psycopg
import pytest

from b24bridge import migrations
from b24bridge.db import Database, DatabaseUnavailable, EmbeddedPostgres, ensure_database, libpq_url, sqlalchemy_url
from b24bridge.settings import Settings


def _names(url: str, query: str) -> set[str]:
    with psycopg.connect(url) as conn:
        return {row[0] for row in conn.execute(query).fetchall()}


def _tables(url: str) -> set[str]:
    return _names(url, "SELECT tablename FROM pg_tables WHERE schemaname = current_schema()")


def _procrastinate_objects(url: str) -> set[str]:
    return (
        _names(url, "SELECT relname FROM pg_class WHERE relname LIKE 'procrastinate%'")
        | _names(url, "SELECT proname FROM pg_proc WHERE proname LIKE 'procrastinate%'")
        | _names(url, "SELECT typname FROM pg_type WHERE typname LIKE 'procrastinate%'")
    )


def test_url_normalisation() -> None:
    assert libpq_url("postgres://u@h/db") == "postgresql://u@h/db"
    assert libpq_url("postgresql+psycopg://u@h/db") == "postgresql://u@h/db"
    assert sqlalchemy_url("postgresql://u@h/db?sslmode=require") == "postgresql+psycopg://u@h/db?sslmode=require"


def test_migrations_apply_on_fresh_database_and_are_idempotent(make_database: Callable[[], str]) -> None:
    url = make_database()
    assert migrations.current_revision(url) is None

    migrations.upgrade(url)
    assert migrations.current_revision(url) == migrations.head_revision()
    tables = _tables(url)
    assert {"procrastinate_jobs", "procrastinate_events", "procrastinate_workers", "b24bridge_meta"} <= tables

    migrations.upgrade(url)  # second run: nothing to do, nothing breaks
    assert migrations.current_revision(url) == migrations.head_revision()
    assert _tables(url) == tables


def test_downgrade_removes_procrastinate_objects(make_database: Callable[[], str]) -> None:
    url = make_database()
    migrations.upgrade(url)
    migrations.downgrade(url, "base")
    assert _procrastinate_objects(url) == set()
    assert "b24bridge_meta" not in _tables(url)
    migrations.upgrade(url)  # and back up again
    assert migrations.current_revision(url) == migrations.head_revision()


async def test_pool_and_ping(database: Database) -> None:
    await database.ping()
    async with database.pool.connection() as conn:
        await conn.execute("INSERT INTO b24bridge_meta (key, value) VALUES ('probe', 'x') ON CONFLICT DO NOTHING")
        cur = await conn.execute("SELECT value FROM b24bridge_meta WHERE key = 'probe'")
        assert await cur.fetchone() == ("x",)


async def test_procrastinate_defers_into_migrated_schema(database: Database) -> None:
    app = database.procrastinate_app()

    @app.task(name="b24bridge.tests.noop", queue="tests")
    async def noop(value: int) -> None:
        pass

    async with app.open_async():
        job_id = await noop.defer_async(value=7)
    async with database.pool.connection() as conn:
        cur = await conn.execute("SELECT task_name, args, status FROM procrastinate_jobs WHERE id = %s", (job_id,))
        assert await cur.fetchone() == ("b24bridge.tests.noop", {"value": 7}, "todo")


async def test_embedded_database_starts_and_stops(embedded_dir: Path) -> None:
    settings = Settings(data_dir=embedded_dir / "data")
    async with Database(settings) as db:
        assert db.embedded
        await db.ping()
        # The service database is created on first start.
        assert db.url.startswith("postgresql://postgres@localhost/b24bridge?host=")
        pgdata = embedded_dir / "data" / "pg"
        assert (pgdata / "postmaster.pid").exists()
    assert not (pgdata / "postmaster.pid").exists()


async def test_ping_reports_unreachable_database(unused_tcp_port: int) -> None:
    settings = Settings(database_url=f"postgresql://app:hunter2@127.0.0.1:{unused_tcp_port}/nope")
    async with Database(settings) as db:
        with pytest.raises(DatabaseUnavailable) as caught:
            await db.ping()
    message = str(caught.value)
    assert "hunter2" not in message
    assert message


@pytest.mark.timeout(120)
async def test_the_pool_is_back_within_seconds_after_a_long_outage(embedded_dir: Path) -> None:
    """Down for 20 s, the pool's own backoff (1, 2, 4, 8, 16 s, each within 10 %) would leave it waiting until its
    next attempt about 31 s in: 7 s or more after the server is back. Giving up sooner, it answers at once."""
    server = EmbeddedPostgres(embedded_dir / "outage")
    admin = await asyncio.to_thread(server.start)
    try:
        await ensure_database(admin, "b24bridge")
        async with Database(Settings(database_url=server.url("b24bridge"))) as db:
            await db.ping()
            await asyncio.to_thread(server.stop)
            down_until = time.monotonic() + 20
            while time.monotonic() < down_until:  # requests keep coming, as /readyz and the gauges do
                with pytest.raises(DatabaseUnavailable):
                    await db.ping()
                await asyncio.sleep(2)
            await asyncio.to_thread(server.start)
            await _answers_within(db, time.monotonic(), 4)
    finally:
        await asyncio.to_thread(server.stop)


@pytest.mark.timeout(120)
async def test_an_embedded_server_stopped_under_the_service_is_started_again(embedded_dir: Path) -> None:
    settings = Settings(data_dir=embedded_dir / "revive")
    async with Database(settings) as db:
        await db.ping()
        pidfile = embedded_dir / "revive" / "pg" / "postmaster.pid"
        first = int(pidfile.read_text().split()[0])
        os.kill(first, signal.SIGINT)  # what `pg_ctl stop -m fast` does: as if someone stopped it by hand
        stopped = time.monotonic()
        for _ in range(300):  # until the server has gone (its pid file with it)
            if not pidfile.exists():
                break
            await asyncio.sleep(0.1)
        await _answers_within(db, stopped, 20)
        assert int(pidfile.read_text().split()[0]) != first
    assert not pidfile.exists()  # and the last user still stops it


async def _answers_within(db: Database, since: float, seconds: float) -> None:
    """Ping until the database answers; fail once ``seconds`` have passed since ``since`` (monotonic)."""
    while True:
        try:
            await db.ping()
            return
        except DatabaseUnavailable:
            assert time.monotonic() - since < seconds, f"the database did not answer within {seconds:g} s"
            await asyncio.sleep(0.5)


async def test_the_job_engine_sends_each_statement_alone(database: Database) -> None:
    """Its pool's connections autocommit: a job's fetch and end were a BEGIN, the query and a COMMIT each."""
    app = database.procrastinate_app()

    @app.task(name="b24bridge.tests.noop", queue="tests")
    async def noop(value: int) -> None:
        pass

    async with app.open_async():
        await noop.defer_async(value=1)
        async with app.connector.pool.connection() as conn:  # type: ignore[attr-defined]
            await conn.execute("SELECT count(*) FROM procrastinate_jobs")
            assert conn.autocommit
            assert conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE  # no transaction left open
