"""PostgreSQL access: an external server from settings, or a private embedded one.

Without ``B24BRIDGE_DATABASE_URL`` the service runs a PostgreSQL of its own (the ``pgserver``
package) under ``data_dir/pg`` so that ``b24bridge serve`` works with zero setup. Every b24bridge
process on that folder (``serve``, ``worker``, the CLI commands) shares that one server; the last one
to let go stops it (see :class:`EmbeddedPostgres`).
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import time
import weakref
from types import TracebackType
from typing import Any

import procrastinate
import psycopg
from psycopg import sql
from psycopg_pool import AsyncConnectionPool, PoolTimeout

from b24bridge.embedded import HANDLES_FILE, EmbeddedPostgres
from b24bridge.observability import get_logger, redact_text
from b24bridge.settings import Settings

__all__ = [
    "DATABASE_AWAY",
    "EMBEDDED_DB_NAME",
    "HANDLES_FILE",
    "Database",
    "DatabaseUnavailable",
    "EmbeddedPostgres",
    "ensure_database",
    "libpq_url",
    "procrastinate_app",
    "sqlalchemy_url",
]

log = get_logger(__name__)

EMBEDDED_DB_NAME = "b24bridge"
PING_TIMEOUT = 2.0


class DatabaseUnavailable(Exception):
    """The database did not answer; the message is safe to show (credentials are redacted)."""


# What says "the database cannot answer now" (as opposed to a fault in what was asked of it): a lost or refused
# connection, a checkout that timed out, an answer that did not come.
DATABASE_AWAY: tuple[type[BaseException], ...] = (
    psycopg.OperationalError,
    psycopg.InterfaceError,
    PoolTimeout,
    TimeoutError,
    OSError,
    DatabaseUnavailable,
)


def libpq_url(url: str) -> str:
    """Normalise ``postgresql+driver://`` / ``postgres://`` to a URL libpq (psycopg) accepts."""
    return re.sub(r"^postgres(?:ql)?(?:\+\w+)?://", "postgresql://", url)


def sqlalchemy_url(url: str) -> str:
    """The same URL with SQLAlchemy's psycopg 3 driver selected."""
    return re.sub(r"^postgres(?:ql)?(?:\+\w+)?://", "postgresql+psycopg://", url)


POOL_TIMEOUT = 5.0
# How often a process using the embedded server checks that it still runs (and starts it again if not).
EMBEDDED_CHECK_EVERY = 2.0
# How long the pool keeps retrying one lost connection (backing off 1, 2, 4 s ...) before it lets the slot go. The
# default (5 min) let the pauses grow to a minute or two, so after an outage of a few minutes the service stayed
# unready that long with the database back. Given up sooner, the next request (a robot call, /readyz, the gauges)
# opens a fresh connection at once.
POOL_RECONNECT_GIVE_UP = 10.0
# How long the job engine waits for a pooled connection. Its default (30 s) is what a stopping worker waited when
# the database had gone away, so a shutdown during an outage took half a minute.
JOB_POOL_TIMEOUT = POOL_TIMEOUT
# The job engine's own connections: one listens for new jobs for good, the rest fetch jobs, record their ends and
# send heartbeats. psycopg_pool's default (4, so 3 to share) made a job wait ~130 ms on average between its deferral
# and its start with 50 portals at one robot call a second each (bench/tenants.py): the fetches queued for a connection.
JOB_POOL_SIZE = 10


def procrastinate_app(conninfo: str, **kwargs: Any) -> procrastinate.App:
    """A procrastinate App on ``conninfo``; the caller opens it (``async with app.open_async()``)."""
    connector = procrastinate.PsycopgConnector(
        conninfo=libpq_url(conninfo),
        timeout=JOB_POOL_TIMEOUT,
        min_size=2,
        max_size=JOB_POOL_SIZE,
        pool_factory=_job_pool,
    )
    return procrastinate.App(connector=connector, **kwargs)


def _job_pool(**args: Any) -> AsyncConnectionPool:
    """The job engine's pool, on the terms of ours. Every query of procrastinate is one statement (a call of its
    functions), yet its own pool paid four round trips for each: a check (an empty query) when taking a connection,
    a ``BEGIN``, the query and a ``COMMIT`` when giving it back; a job's fetch and its end were a sixth of the
    worker's database time with a 2,000-deal flood (bench/tenants.py). Autocommit runs each statement as its own
    transaction, as before; a connection is checked only after it sat idle."""
    return AsyncConnectionPool(**{**args, "configure": _autocommit, "check": _check_if_idle, "reset": _mark_returned})


async def _autocommit(conn: psycopg.AsyncConnection[Any]) -> None:
    # Not the pool's connection ``kwargs``: procrastinate opens its listening connection with those and its own
    # ``autocommit=True`` beside them.
    await conn.set_autocommit(True)


async def ensure_database(admin_url: str, dbname: str) -> None:
    """Create ``dbname`` on the server behind ``admin_url`` unless it already exists."""
    async with await psycopg.AsyncConnection.connect(libpq_url(admin_url), autocommit=True) as conn:
        cur = await conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (dbname,))
        if await cur.fetchone() is None:
            # Another process won the race, which is just as good: DuplicateDatabase if it had committed
            # by the time we looked, UniqueViolation (on pg_database's name index) if it was still creating.
            with contextlib.suppress(psycopg.errors.DuplicateDatabase, psycopg.errors.UniqueViolation):
                await conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(dbname)))


class Database:
    """Resolves, starts and stops the service's PostgreSQL and owns its connection pool.

    Use as ``async with Database(settings) as db:`` or call :meth:`start` / :meth:`stop`.
    """

    def __init__(self, settings: Settings, *, min_size: int = 1, max_size: int = 10) -> None:
        self.settings = settings
        self._min_size = min_size
        self._max_size = max_size
        self._embedded: EmbeddedPostgres | None = None
        self._pool: AsyncConnectionPool | None = None
        self._keeper: asyncio.Task[None] | None = None
        self._url: str | None = str(settings.database_url) if settings.database_url is not None else None

    @property
    def embedded(self) -> bool:
        return self.settings.database_url is None

    @property
    def url(self) -> str:
        """libpq URL of the service database (known once :meth:`start` has run)."""
        if self._url is None:
            raise RuntimeError("Database.start() has not been called")
        return libpq_url(self._url)

    @property
    def pool(self) -> AsyncConnectionPool:
        if self._pool is None:
            raise RuntimeError("Database.start() has not been called")
        return self._pool

    async def start(self) -> None:
        if self._pool is not None:
            return
        if self.embedded:
            pgdata = self.settings.data_dir / "pg"
            log.info(f"starting embedded PostgreSQL in {pgdata}", pgdata=str(pgdata))
            self._embedded = EmbeddedPostgres(pgdata)
            try:
                admin_url = await asyncio.to_thread(self._embedded.start)
                await ensure_database(admin_url, EMBEDDED_DB_NAME)
            except BaseException:
                await asyncio.to_thread(self._embedded.stop)
                self._embedded = None
                raise
            self._url = self._embedded.url(EMBEDDED_DB_NAME)
        # open(wait=False): the service must come up (and report not-ready) even if the database
        # is down; the pool keeps reconnecting in the background.
        self._pool = AsyncConnectionPool(
            self.url,
            min_size=self._min_size,
            max_size=self._max_size,
            # A lone statement is its own transaction: without autocommit each one paid a BEGIN and a COMMIT round
            # trip besides its own (most of a delivery's database work). What must be atomic says so with
            # ``conn.transaction()``.
            kwargs={"autocommit": True},
            open=False,
            check=_check_if_idle,
            reset=_mark_returned,
            name="b24bridge",
            # A request waiting for a connection while the database is down gets its 503 within seconds, not after
            # the pool's default half minute (a portal's robot call gives up after ten).
            timeout=POOL_TIMEOUT,
            reconnect_timeout=POOL_RECONNECT_GIVE_UP,
        )
        await self._pool.open(wait=False)
        if self._embedded is not None:
            self._keeper = asyncio.get_running_loop().create_task(_keep_alive(self._embedded))

    async def stop(self) -> None:
        keeper, self._keeper = self._keeper, None
        if keeper is not None:
            keeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await keeper
        pool, self._pool = self._pool, None
        embedded, self._embedded = self._embedded, None
        try:
            if pool is not None:
                await pool.close()
        finally:
            if embedded is not None:
                log.info("releasing embedded PostgreSQL", pgdata=str(embedded.pgdata))
                try:
                    await asyncio.to_thread(embedded.stop)
                except asyncio.CancelledError:
                    # A second Ctrl-C cancels the shutdown; the server must not outlive us anyway.
                    embedded.stop()
                    raise

    async def __aenter__(self) -> Database:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()

    async def ping(self) -> None:
        """Run ``SELECT 1`` within ``PING_TIMEOUT`` seconds or raise :class:`DatabaseUnavailable`."""
        timeout = PING_TIMEOUT
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        try:
            async with asyncio.timeout(timeout):
                try:
                    async with self.pool.connection(timeout=timeout * 0.6) as conn:
                        await conn.execute("SELECT 1")
                        return
                except PoolTimeout:
                    pass
                # The pool only says "couldn't get a connection"; one direct attempt tells why.
                remaining = max(1, int(deadline - loop.time()))
                conn2 = await psycopg.AsyncConnection.connect(self.url, connect_timeout=remaining)
                await conn2.close()
                raise DatabaseUnavailable("no pooled connection available within the timeout")
        except TimeoutError:
            raise DatabaseUnavailable(f"database did not answer within {timeout:g}s") from None
        except psycopg.Error as exc:
            raise DatabaseUnavailable(redact_text(str(exc).strip() or type(exc).__name__)) from None

    def procrastinate_app(self, **kwargs: Any) -> procrastinate.App:
        return procrastinate_app(self.url, **kwargs)


# A connection back in the pool this recently is known good: checking it again on the next checkout (a round trip)
# was an eighth of what a robot run cost the worker (py-spy, bench/tenants.py). One idle longer, which the database
# may have dropped meanwhile (a restart, an idle timeout, a lost network), is checked before it is handed out.
CHECK_IDLE_AFTER = 2.0
_returned_at: weakref.WeakKeyDictionary[Any, float] = weakref.WeakKeyDictionary()


async def _check_if_idle(conn: psycopg.AsyncConnection[Any]) -> None:
    if time.monotonic() - _returned_at.get(conn, 0.0) > CHECK_IDLE_AFTER:
        await AsyncConnectionPool.check_connection(conn)


async def _mark_returned(conn: psycopg.AsyncConnection[Any]) -> None:
    _returned_at[conn] = time.monotonic()


async def _keep_alive(embedded: EmbeddedPostgres) -> None:
    """An embedded server that was killed or crashed comes back by itself: nobody else would start it again, and a
    portal never retries a robot call refused meanwhile."""
    while True:
        await asyncio.sleep(EMBEDDED_CHECK_EVERY)
        try:
            await asyncio.to_thread(embedded.revive)
        except Exception as exc:  # keep watching: the next check may succeed (a full disk freed, a port released)
            reason = redact_text(f"{type(exc).__name__}: {exc}")
            log.error("embedded PostgreSQL could not be started again", error=reason)
