"""PostgreSQL access: an external server from settings, or a private embedded one.

Without ``B24BRIDGE_DATABASE_URL`` the service runs a PostgreSQL of its own (the ``pgserver``
package) under ``data_dir/pg`` so that ``b24bridge serve`` works with zero setup.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import json
import os
import re
import subprocess
import threading
import warnings
from pathlib import Path
from types import TracebackType
from typing import Any
from urllib.parse import parse_qs, quote, urlsplit

import procrastinate
import psycopg
from psycopg import sql
from psycopg_pool import AsyncConnectionPool, PoolTimeout

from b24bridge.observability import get_logger, redact_text
from b24bridge.settings import Settings

log = get_logger(__name__)

EMBEDDED_DB_NAME = "b24bridge"
PING_TIMEOUT = 2.0


class DatabaseUnavailable(Exception):
    """The database did not answer; the message is safe to show (credentials are redacted)."""


def libpq_url(url: str) -> str:
    """Normalise ``postgresql+driver://`` / ``postgres://`` to a URL libpq (psycopg) accepts."""
    return re.sub(r"^postgres(?:ql)?(?:\+\w+)?://", "postgresql://", url)


def sqlalchemy_url(url: str) -> str:
    """The same URL with SQLAlchemy's psycopg 3 driver selected."""
    return re.sub(r"^postgres(?:ql)?(?:\+\w+)?://", "postgresql+psycopg://", url)


def procrastinate_app(conninfo: str, **kwargs: Any) -> procrastinate.App:
    """A procrastinate App on ``conninfo``; the caller opens it (``async with app.open_async()``)."""
    return procrastinate.App(connector=procrastinate.PsycopgConnector(conninfo=libpq_url(conninfo)), **kwargs)


class EmbeddedPostgres:
    """A pgserver-managed PostgreSQL living in one directory, owned by this process."""

    def __init__(self, pgdata: Path) -> None:
        self.pgdata = pgdata.expanduser().resolve()
        self._server: Any = None
        # stop() may run in a worker thread and, after a second Ctrl-C, again on the event loop.
        self._stop_lock = threading.Lock()

    def start(self) -> str:
        """Start (blocking) and return the admin URL of the ``postgres`` database."""
        # Imported lazily: heavy, and only needed when no external database is configured.
        with warnings.catch_warnings():
            # platformdirs warns that XDG_RUNTIME_DIR is unset (normal in containers and CI).
            warnings.simplefilter("ignore")
            pgserver: Any = importlib.import_module("pgserver")

        self.pgdata.parent.mkdir(parents=True, exist_ok=True)
        self._forget_dead_handles()
        self._server = pgserver.get_server(self.pgdata, cleanup_mode="stop")
        return self.url("postgres")

    def url(self, dbname: str) -> str:
        assert self._server is not None
        # pgserver answers only on a Unix socket and gives ``postgresql://postgres:@/db?host=/dir``;
        # pydantic's PostgresDsn insists on a host, so use localhost and let the ``host`` query
        # parameter (which libpq prefers over the authority part) point at the socket directory.
        raw = self._server.get_uri(dbname)
        socket_dir = parse_qs(urlsplit(raw).query)["host"][0]
        return f"postgresql://postgres@localhost/{dbname}?host={quote(socket_dir, safe='/')}"

    def stop(self) -> None:
        with self._stop_lock:
            server, self._server = self._server, None
            if server is not None:
                self._stop(server)

    def _stop(self, server: Any) -> None:
        info = server.get_postmaster_info()
        server.cleanup()
        # pgserver only stops the server when this process holds the last handle; a handle left by a
        # crashed process would keep it running forever, so make sure ourselves. postmaster.pid is
        # removed by PostgreSQL itself on a clean shutdown.
        if (self.pgdata / "postmaster.pid").exists():
            commands: Any = importlib.import_module("pgserver._commands")
            try:
                commands.pg_ctl(["-w", "-m", "fast", "stop"], pgdata=self.pgdata, user=server.system_user)
            except subprocess.CalledProcessError:
                with contextlib.suppress(Exception):
                    info.process.terminate()
        # ``pg_ctl start`` can leave the postmaster as our child; reap it so no zombie outlives stop().
        with contextlib.suppress(Exception):
            info.process.wait(timeout=5)

    def _forget_dead_handles(self) -> None:
        # pgserver counts live users in ``.handle_pids.json``; pids of processes that were killed
        # stay there and would stop it from ever shutting the server down.
        handles = self.pgdata / ".handle_pids.json"
        if not handles.exists():
            return
        try:
            pids = json.loads(handles.read_text())
        except ValueError:
            pids = []
        alive = [pid for pid in pids if isinstance(pid, int) and _pid_alive(pid)]
        if alive != pids:
            handles.write_text(json.dumps(alive))


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


async def ensure_database(admin_url: str, dbname: str) -> None:
    """Create ``dbname`` on the server behind ``admin_url`` unless it already exists."""
    async with await psycopg.AsyncConnection.connect(libpq_url(admin_url), autocommit=True) as conn:
        cur = await conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (dbname,))
        if await cur.fetchone() is None:
            # DuplicateDatabase: another process won the race, which is just as good.
            with contextlib.suppress(psycopg.errors.DuplicateDatabase):
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
            open=False,
            check=AsyncConnectionPool.check_connection,
            name="b24bridge",
        )
        await self._pool.open(wait=False)

    async def stop(self) -> None:
        pool, self._pool = self._pool, None
        embedded, self._embedded = self._embedded, None
        try:
            if pool is not None:
                await pool.close()
        finally:
            if embedded is not None:
                log.info("stopping embedded PostgreSQL", pgdata=str(embedded.pgdata))
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
