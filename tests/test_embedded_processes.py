"""The embedded database shared by real processes: a second command never stops the service's database, read-only
commands never migrate, a second ``serve`` on a taken port fails before touching anything, and start-up errors are
one line an operator can act on."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

ROOT = Path(__file__).resolve().parent.parent
EXECUTABLE = Path(sys.executable).parent / "b24bridge"
COMMAND = [str(EXECUTABLE)] if EXECUTABLE.exists() else [sys.executable, "-m", "b24bridge.cli"]


def _env(data_dir: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("B24BRIDGE_")}
    env.update({"B24BRIDGE_DATA_DIR": str(data_dir), "B24BRIDGE_LOG_FORMAT": "json", "COLUMNS": "200", **extra})
    return env


def _said(stderr: str) -> list[str]:
    """What a command said to its operator on stderr: every line that is not a JSON log record."""
    return [line for line in stderr.strip().splitlines() if not line.startswith("{")]


def _cli(data_dir: Path, *args: str, **extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*COMMAND, *args], env=_env(data_dir, **extra), cwd=data_dir.parent, capture_output=True, text=True, timeout=90
    )


class Service:
    def __init__(self, data_dir: Path, port: int) -> None:
        self.port = port
        self.log = data_dir.parent / f"serve-{port}.log"
        with self.log.open("wb") as out:
            self.proc = subprocess.Popen(
                [*COMMAND, "serve", "--port", str(port)],
                env=_env(data_dir),
                cwd=data_dir.parent,
                stdout=out,
                stderr=out,
            )

    def ready(self) -> bool:
        try:
            return httpx.get(f"http://127.0.0.1:{self.port}/readyz", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    def wait_ready(self, timeout: float = 90) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.ready():
                return
            assert self.proc.poll() is None, self.log.read_text()
            time.sleep(0.2)
        raise AssertionError(f"serve did not become ready:\n{self.log.read_text()}")

    def stop(self) -> float:
        started = time.monotonic()
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return time.monotonic() - started


@pytest.fixture
def service(embedded_dir: Path, unused_tcp_port: int) -> Iterator[Service]:
    running = Service(embedded_dir / "data", unused_tcp_port)
    try:
        running.wait_ready()
        yield running
    finally:
        running.stop()


@pytest.mark.timeout(180)
def test_commands_beside_a_running_service_leave_its_database_alone(service: Service, embedded_dir: Path) -> None:
    data_dir = embedded_dir / "data"
    for command in (("runs", "list"), ("portals", "list"), ("runs", "list", "--status", "dead")):
        done = _cli(data_dir, *command)
        assert done.returncode == 0, done.stderr
        assert "id" in done.stdout or "member_id" in done.stdout
        assert service.ready(), f"{command} stopped the service's database"
    # A second serve on the same port fails at once, before touching the database, and says why in one line.
    second = _cli(data_dir, "serve", "--port", str(service.port))
    assert second.returncode == 3
    assert _said(second.stderr) == [f"B24BRIDGE_PORT: cannot listen on 127.0.0.1:{service.port}: it is already in use"]
    assert "embedded PostgreSQL" not in second.stderr + second.stdout
    assert service.ready()
    # The service still stops promptly, and the last user out stops the database.
    assert service.stop() < 15
    assert not (data_dir / "pg" / "postmaster.pid").exists(), service.log.read_text()


def test_read_only_commands_do_not_migrate(embedded_dir: Path) -> None:
    data_dir = embedded_dir / "data"
    done = _cli(data_dir, "runs", "list")
    assert done.returncode == 3
    [said] = _said(done.stderr)
    assert "schema is at revision none" in said and "b24bridge db upgrade" in said
    upgraded = _cli(data_dir, "db", "upgrade")
    assert upgraded.returncode == 0 and "database at revision" in upgraded.stdout, upgraded.stderr
    assert _cli(data_dir, "runs", "list").returncode == 0
    assert not (data_dir / "pg" / "postmaster.pid").exists()


@pytest.mark.parametrize("command", [("serve",), ("worker",), ("runs", "list"), ("db", "upgrade")])
def test_an_unreachable_database_is_one_line(
    embedded_dir: Path, unused_tcp_port: int, command: tuple[str, ...]
) -> None:
    url = f"postgresql://app:hunter2@127.0.0.1:{unused_tcp_port}/b24bridge"
    args = (*command, "--port", str(unused_tcp_port + 1)) if command == ("serve",) else command
    done = _cli(embedded_dir / "data", *args, B24BRIDGE_DATABASE_URL=url)
    assert done.returncode == 3, done.stderr
    lines = _said(done.stderr)
    assert len(lines) == 1 and lines[0].startswith("B24BRIDGE_DATABASE_URL: the database cannot be reached"), lines
    assert "hunter2" not in done.stderr and "Traceback" not in done.stderr
