"""PostgreSQL access: an external server from settings, or a private embedded one.

Without ``B24BRIDGE_DATABASE_URL`` the service runs a PostgreSQL of its own (the ``pgserver``
package) under ``data_dir/pg`` so that ``b24bridge serve`` works with zero setup. Every b24bridge
process on that folder (``serve``, ``worker``, the CLI commands) shares that one server; the last one
to let go stops it (see :class:`EmbeddedPostgres`).
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import importlib
import json
import os
import re
import subprocess
import sys
import threading
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, ClassVar
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
# pgserver's list of the pids using a data directory (a JSON list of ints, inside the directory).
HANDLES_FILE = ".handle_pids.json"
# Seconds ``pg_ctl stop`` may take in each shutdown mode before the next, harsher one is tried.
STOP_TIMEOUT = 5


class DatabaseUnavailable(Exception):
    """The database did not answer; the message is safe to show (credentials are redacted)."""


def libpq_url(url: str) -> str:
    """Normalise ``postgresql+driver://`` / ``postgres://`` to a URL libpq (psycopg) accepts."""
    return re.sub(r"^postgres(?:ql)?(?:\+\w+)?://", "postgresql://", url)


def sqlalchemy_url(url: str) -> str:
    """The same URL with SQLAlchemy's psycopg 3 driver selected."""
    return re.sub(r"^postgres(?:ql)?(?:\+\w+)?://", "postgresql+psycopg://", url)


POOL_TIMEOUT = 5.0
# How long the pool keeps retrying one lost connection (backing off 1, 2, 4 s ...) before it lets the slot go. The
# default (5 min) let the pauses grow to a minute or two, so after an outage of a few minutes the service stayed
# unready that long with the database back. Given up sooner, the next request (a robot call, /readyz, the gauges)
# opens a fresh connection at once.
POOL_RECONNECT_GIVE_UP = 10.0
# How long the job engine waits for a pooled connection. Its default (30 s) is what a stopping worker waited when
# the database had gone away, so a shutdown during an outage took half a minute.
JOB_POOL_TIMEOUT = POOL_TIMEOUT


def procrastinate_app(conninfo: str, **kwargs: Any) -> procrastinate.App:
    """A procrastinate App on ``conninfo``; the caller opens it (``async with app.open_async()``)."""
    connector = procrastinate.PsycopgConnector(conninfo=libpq_url(conninfo), timeout=JOB_POOL_TIMEOUT)
    return procrastinate.App(connector=connector, **kwargs)


@dataclass
class _Shared:
    """One directory's server as this process uses it: the pgserver handle and how many of us use it."""

    server: Any
    users: int = 0


class EmbeddedPostgres:
    """A pgserver-managed PostgreSQL in one directory, shared by every process that uses the directory.

    The first process to need it runs initdb and starts it; the others attach to the running server.
    Users are counted in pgserver's ``.handle_pids.json``, one pid per process (uses within one process
    are counted here). The server runs as long as a listed process is alive, whichever process started
    it, and the last one to :meth:`stop` shuts it down. A starter that exits first leaves the server to
    the others (``pg_ctl`` detached the postmaster from it). Pids of processes that died without letting
    go (kill -9) are dropped whenever the list is rewritten, so whoever leaves last after such a crash
    stops the server, and one that merely attached never stops it while another process still uses it.

    Start/attach and stop/detach run under an exclusive ``flock`` on ``.<dir>.lock`` beside the
    directory: two processes never initdb or start at once, and the server is never stopped while
    another process is attaching to it.
    """

    # By directory, for this process: the handle list names a process once, so it must leave with its last user.
    _shared: ClassVar[dict[Path, _Shared]] = {}

    def __init__(self, pgdata: Path) -> None:
        self.pgdata = pgdata.expanduser().resolve()
        self._server: Any = None
        # start() and stop() run in worker threads; after a second Ctrl-C, stop() also on the event loop.
        self._lock = threading.Lock()

    def start(self) -> str:
        """Start the server or attach to the running one (blocking); return the ``postgres`` database's URL."""
        with self._lock:
            if self._server is None:
                self.pgdata.mkdir(parents=True, exist_ok=True)
                with self._exclusive():
                    shared = self._shared.get(self.pgdata)
                    if shared is None:
                        shared = self._shared[self.pgdata] = _Shared(self._attach())
                    shared.users += 1
                self._server = shared.server
                # A process that ends without stop() (an uncaught exception, sys.exit) still lets go.
                atexit.register(self.stop)
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
        """Let go of the server; shut it down if no other user, here or in a live process, is left."""
        with self._lock:
            server, self._server = self._server, None
            if server is None:
                return
            atexit.unregister(self.stop)
            with self._exclusive():
                shared = self._shared[self.pgdata]
                shared.users -= 1
                if shared.users:
                    return
                del self._shared[self.pgdata]
                others = _rewrite_handles(self.pgdata, leaving=os.getpid())
                if others:
                    log.info(
                        "embedded PostgreSQL left running for other processes", pgdata=str(self.pgdata), pids=others
                    )
                else:
                    self._shutdown(server.system_user)

    @contextlib.contextmanager
    def _exclusive(self) -> Iterator[None]:
        # Beside the directory, not in it: initdb wants an empty one. A fresh descriptor per use, so the
        # lock also keeps out other threads of this process; the kernel drops it when its holder dies.
        fd = os.open(self.pgdata.with_name(f".{self.pgdata.name}.lock"), os.O_RDWR | os.O_CREAT, 0o644)
        try:
            _lock_exclusive(fd)
            yield
        finally:
            os.close(fd)

    def _attach(self) -> Any:
        others = _rewrite_handles(self.pgdata)
        # Not get_server(): its per-process cache would hand a stopped server back to a later start().
        # cleanup_mode=None: only this class stops the server, under the lock and after counting users.
        server = _import("pgserver").PostgresServer(self.pgdata, cleanup_mode=None)
        # pgserver's exit hook would rewrite the handle list outside our lock; stop() does that instead.
        atexit.unregister(server._cleanup)
        log.info("embedded PostgreSQL ready", pgdata=str(self.pgdata), shared_with=others)
        return server

    def _shutdown(self, system_user: str | None) -> None:
        # Read afresh: another user may have restarted the server since we attached.
        info = _import("pgserver.utils").PostmasterInfo.read_from_pgdata(self.pgdata)
        if info is None or not _pid_alive(info.pid):
            return
        pg_ctl = _import("pgserver._commands").pg_ctl
        started = time.monotonic()
        # "fast" disconnects clients (stray connections of other processes too) where "smart" would wait
        # for them; "immediate" (crash recovery at the next start) if even that hangs.
        for mode in ("fast", "immediate"):
            try:
                pg_ctl(["-w", "-t", str(STOP_TIMEOUT), "-m", mode, "stop"], pgdata=self.pgdata, user=system_user)
            except subprocess.CalledProcessError as exc:
                log.warning(f"pg_ctl stop -m {mode} failed", pgdata=str(self.pgdata), error=str(exc))
                continue
            # pg_ctl daemonises the postmaster, but a subreaper (or PID 1 in a container) inherits it:
            # collect it so that no zombie is left behind.
            with contextlib.suppress(ChildProcessError):
                os.waitpid(info.pid, 0)
            log.info(
                "embedded PostgreSQL stopped", pgdata=str(self.pgdata), seconds=round(time.monotonic() - started, 2)
            )
            return
        log.error("embedded PostgreSQL did not stop", pgdata=str(self.pgdata), pid=info.pid)


if sys.platform == "win32":  # no fcntl there: the Windows quick start (start.ps1) must get this far
    import msvcrt

    def _lock_exclusive(fd: int) -> None:
        # LK_LOCK gives up after about ten seconds of retries; keep waiting, as flock does.
        while True:
            try:
                msvcrt.locking(fd, msvcrt.LK_LOCK, 1)
                return
            except OSError:
                continue

else:
    import fcntl

    def _lock_exclusive(fd: int) -> None:
        fcntl.flock(fd, fcntl.LOCK_EX)


def _import(module: str) -> Any:
    # pgserver is imported lazily: heavy, and only needed when no external database is configured.
    with warnings.catch_warnings():
        # platformdirs warns that XDG_RUNTIME_DIR is unset (normal in containers and CI).
        warnings.simplefilter("ignore")
        return importlib.import_module(module)


def _rewrite_handles(pgdata: Path, *, leaving: int | None = None) -> list[int]:
    """Drop dead processes (and ``leaving``) from pgserver's handle list; return the pids left in it.

    Killed processes never take their pid out; left there, they would keep the server running forever.
    """
    handles = pgdata / HANDLES_FILE
    if not handles.exists():  # nothing to rewrite, and a directory initdb has yet to fill must stay empty
        return []
    try:
        pids = json.loads(handles.read_text())
    except ValueError:
        pids = []
    kept = [pid for pid in pids if isinstance(pid, int) and pid != leaving and _pid_alive(pid)]
    if kept != pids:
        # Replaced, never rewritten in place: a process killed halfway must not leave half a list.
        partial = handles.with_name(f"{HANDLES_FILE}.tmp")
        partial.write_text(json.dumps(kept))
        partial.replace(handles)
    return kept


def _pid_alive(pid: int) -> bool:
    # A zombie has exited; where nobody reaps orphans (an init that does not, a container without one)
    # a killed user would otherwise count as alive for good. psutil comes with pgserver.
    psutil = _import("psutil")
    try:
        return bool(psutil.Process(pid).status() != psutil.STATUS_ZOMBIE)
    except psutil.NoSuchProcess:
        return False
    except psutil.AccessDenied:
        return True


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
            # A request waiting for a connection while the database is down gets its 503 within seconds, not after
            # the pool's default half minute (a portal's robot call gives up after ten).
            timeout=POOL_TIMEOUT,
            reconnect_timeout=POOL_RECONNECT_GIVE_UP,
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
