"""The embedded PostgreSQL: a pgserver-managed server in one data folder, shared by every b24bridge process on it.

Kept apart from :mod:`b24bridge.db` (which owns connections and the pool) because this is process plumbing: file locks,
pgserver's handle list, ``pg_ctl``, and starting the server again if it dies under a running service.
"""

from __future__ import annotations

import atexit
import contextlib
import importlib
import json
import os
import subprocess
import sys
import threading
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar
from urllib.parse import parse_qs, quote, urlsplit

from b24bridge.observability import get_logger

log = get_logger(__name__)

# pgserver's list of the pids using a data directory (a JSON list of ints, inside the directory).
HANDLES_FILE = ".handle_pids.json"
# Seconds ``pg_ctl stop`` may take in each shutdown mode before the next, harsher one is tried.
STOP_TIMEOUT = 5


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

    def revive(self) -> bool:
        """Start the server again if it has stopped under a user of it (killed, crashed); True if it was started.

        Under the same lock as start and stop, so it never races the last user shutting the server down on purpose.
        """
        with self._lock:
            if self._server is None:
                return False
            with self._exclusive():
                info = _import("pgserver.utils").PostmasterInfo.read_from_pgdata(self.pgdata)
                if info is not None and _pid_alive(info.pid):
                    return False
                shared = self._shared[self.pgdata]
                shared.server = self._server = self._attach()
        log.warning("embedded PostgreSQL had stopped; started it again", pgdata=str(self.pgdata))
        return True

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
