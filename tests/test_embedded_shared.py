"""One embedded PostgreSQL shared by several b24bridge processes on one data folder.

Real processes on a real pgserver: each user is this file run as a script (see the bottom), which starts a
:class:`Database` on the folder when told to, queries through a connection it opened at start (a stopped or
restarted server breaks it) and stops the database when told to exit.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import psutil  # type: ignore[import-untyped]  # no stubs; comes with pgserver
import psycopg
import pytest

from b24bridge.db import HANDLES_FILE, Database, EmbeddedPostgres
from b24bridge.settings import Settings

REPLY = "@@ "  # marks the helper's answers among anything else it may print
LAST_USER_STOPS_WITHIN = 5.0


class User:
    """A b24bridge-like process using the embedded database of ``data_dir``."""

    def __init__(self, data_dir: Path, log_path: Path) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("B24BRIDGE_")}
        self.log_path = log_path
        with log_path.open("wb") as log:
            self.proc = subprocess.Popen(
                [sys.executable, __file__, str(data_dir)],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=log,
                text=True,
                env=env,
                cwd=data_dir.parent,
            )
        self.pid = self.proc.pid
        self.url = ""
        self.reply()  # imports done: from here on, "start" is quick to act on

    def send(self, command: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(command + "\n")
        self.proc.stdin.flush()

    def reply(self) -> dict[str, Any]:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            if line.startswith(REPLY):
                answer: dict[str, Any] = json.loads(line.removeprefix(REPLY))
                return answer
        self.proc.wait()
        pytest.fail(f"user {self.pid} ended (exit code {self.proc.returncode}):\n{self.log_path.read_text()}")

    def start(self) -> None:
        self.send("start")
        self.started()

    def started(self) -> None:
        self.url = self.reply()["url"]

    def query(self) -> None:
        self.send("query")
        assert self.reply() == {"ok": True}

    def exit(self) -> float:
        """Stop the database and end; returns how long that took, as the test saw it."""
        began = time.monotonic()
        self.send("exit")
        self.reply()
        assert self.proc.wait(timeout=30) == 0, self.log_path.read_text()
        return time.monotonic() - began

    def kill(self) -> None:
        self.proc.kill()
        self.proc.wait()  # reaped: a zombie would still look alive to the survivors

    def logged(self, event: str) -> list[dict[str, Any]]:
        lines = (json.loads(line) for line in self.log_path.read_text().splitlines() if line.startswith("{"))
        return [line for line in lines if line.get("event") == event]


@pytest.fixture
def data_dir() -> Iterator[Path]:
    # Not under tmp_path: as root, PostgreSQL runs as the pgserver user, who must be able to reach the folder,
    # and any pytest session that starts meanwhile makes pytest's temp root (/tmp/pytest-of-root) private again.
    folder = Path(tempfile.mkdtemp(prefix="b24bridge-shared-"))
    yield folder / "data"
    shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture
def pgdata(data_dir: Path) -> Path:
    return data_dir / "pg"


@pytest.fixture
def spawn(data_dir: Path, pgdata: Path, tmp_path: Path) -> Iterator[Any]:
    """Start user processes; whatever a failed test leaves (processes, the server) is killed after it."""
    users: list[User] = []

    def make(*, start: bool = True) -> User:
        user = User(data_dir, tmp_path / f"user{len(users)}.log")
        users.append(user)
        if start:
            user.start()
        return user

    yield make
    for user in users:
        if user.proc.poll() is None:
            user.kill()
        for pipe in (user.proc.stdin, user.proc.stdout):
            if pipe is not None:
                pipe.close()
    postmaster = _postmaster(pgdata)
    if postmaster is not None and _alive(postmaster):
        os.kill(postmaster, signal.SIGQUIT)  # immediate shutdown


def _postmaster(pgdata: Path) -> int | None:
    """The postmaster's pid while the server runs (PostgreSQL removes postmaster.pid on a clean stop)."""
    try:
        return int((pgdata / "postmaster.pid").read_text().split()[0])
    except (FileNotFoundError, IndexError):
        return None


def _alive(pid: int) -> bool:
    # A stopped postmaster may linger as a zombie where nobody reaps orphans (this sandbox's init).
    try:
        return bool(psutil.Process(pid).status() != psutil.STATUS_ZOMBIE)
    except psutil.NoSuchProcess:
        return False


def _handles(pgdata: Path) -> list[int]:
    pids: list[int] = json.loads((pgdata / HANDLES_FILE).read_text())
    return pids


def _assert_running(pgdata: Path, postmaster: int | None = None) -> None:
    """The server is up (and still the same postmaster, when one is given)."""
    current = _postmaster(pgdata)
    assert current is not None and _alive(current), "the embedded PostgreSQL should be running"
    if postmaster is not None:
        assert current == postmaster, "the embedded PostgreSQL was restarted"


def _assert_stopped(pgdata: Path, postmaster: int) -> None:
    assert _postmaster(pgdata) is None, "the embedded PostgreSQL should have been stopped"
    assert not _alive(postmaster)


def test_attached_process_leaves_the_server_to_its_starter(spawn: Any, pgdata: Path) -> None:
    a = spawn()
    postmaster = _postmaster(pgdata)
    b = spawn()
    assert b.url == a.url
    assert sorted(_handles(pgdata)) == sorted([a.pid, b.pid])
    b.query()
    b.exit()

    a.query()  # on the connection A opened before B came and went
    _assert_running(pgdata, postmaster)
    assert _handles(pgdata) == [a.pid]
    assert b.logged("embedded PostgreSQL left running for other processes")[0]["pids"] == [a.pid]

    a.exit()
    assert postmaster is not None
    _assert_stopped(pgdata, postmaster)


def test_server_outlives_its_starter_and_the_last_user_stops_it_quickly(spawn: Any, pgdata: Path) -> None:
    a = spawn()
    postmaster = _postmaster(pgdata)
    assert postmaster is not None
    b = spawn()
    a.exit()

    b.query()
    _assert_running(pgdata, postmaster)
    assert _handles(pgdata) == [b.pid]

    # A client that is no registered user (a psql session, a test) must not hold up the last one's stop.
    with psycopg.connect(b.url, autocommit=True) as stray:
        stray.execute("SELECT 1")
        took = b.exit()
        with pytest.raises(psycopg.OperationalError):
            stray.execute("SELECT 1")
    _assert_stopped(pgdata, postmaster)
    assert took < LAST_USER_STOPS_WITHIN, f"the last user needed {took:.1f}s to stop the server"
    assert b.logged("embedded PostgreSQL stopped")


@pytest.mark.parametrize("b_attached", [False, True], ids=["then-b-attaches", "while-b-is-attached"])
def test_a_killed_starter_leaves_the_server_to_whoever_leaves_last(spawn: Any, pgdata: Path, b_attached: bool) -> None:
    a = spawn()
    postmaster = _postmaster(pgdata)
    assert postmaster is not None
    b = spawn(start=b_attached)
    a.kill()
    _assert_running(pgdata, postmaster)
    assert a.pid in _handles(pgdata)  # A never let go
    if not b_attached:
        b.start()

    b.query()
    b.exit()
    _assert_stopped(pgdata, postmaster)


def test_simultaneous_starts_on_a_fresh_folder_share_one_server(spawn: Any, pgdata: Path) -> None:
    a, b = spawn(start=False), spawn(start=False)
    a.send("start")
    b.send("start")
    a.started()
    b.started()

    assert a.url == b.url
    assert sorted(_handles(pgdata)) == sorted([a.pid, b.pid])
    # One started it (and alone ran initdb); the other found it running.
    ready = {user.pid: user.logged("embedded PostgreSQL ready")[0]["shared_with"] for user in (a, b)}
    assert sorted(ready.values()) == [[], [a.pid]] or sorted(ready.values()) == [[], [b.pid]], ready
    postmaster = _postmaster(pgdata)
    a.query()
    b.query()
    a.exit()
    b.query()
    b.exit()
    assert postmaster is not None
    _assert_stopped(pgdata, postmaster)


def test_two_users_in_one_process_share_the_server(pgdata: Path) -> None:
    first, second = EmbeddedPostgres(pgdata), EmbeddedPostgres(pgdata)
    try:
        url = first.start()
        assert second.start() == url
        postmaster = _postmaster(pgdata)
        assert postmaster is not None
        first.stop()
        with psycopg.connect(url) as conn:
            conn.execute("SELECT 1")
        assert _handles(pgdata) == [os.getpid()]
        second.stop()
        _assert_stopped(pgdata, postmaster)
        assert _handles(pgdata) == []
    finally:
        first.stop()
        second.stop()


# --- the user process ---------------------------------------------------------------------------------------------


def _say(**answer: Any) -> None:
    print(REPLY + json.dumps(answer), flush=True)


async def _use(data_dir: Path, commands: IO[str]) -> None:
    from b24bridge.observability import configure_logging

    configure_logging("INFO", "json")
    _say(loaded=True)
    await asyncio.to_thread(commands.readline)  # "start"
    database = Database(Settings(data_dir=data_dir), min_size=1, max_size=2)
    await database.start()
    conn = await psycopg.AsyncConnection.connect(database.url, autocommit=True)
    _say(url=database.url)
    # An empty line is the end of stdin: the test went away, so let go as an exiting process should.
    while (await asyncio.to_thread(commands.readline)).strip() == "query":
        await conn.execute("SELECT 1")
        await database.ping()
        _say(ok=True)
    await conn.close()
    await database.stop()
    _say(stopped=True)


if __name__ == "__main__":
    asyncio.run(_use(Path(sys.argv[1]), sys.stdin))
