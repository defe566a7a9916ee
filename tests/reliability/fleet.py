"""b24bridge as a deployment runs it, for the reliability suites: API processes behind one address (a load balancer
that tries the next one when a process refuses), worker processes, and a supervisor that starts again whatever dies;
on a PostgreSQL of the test's own (which it may stop and start) and, for some suites, a Redis of its own."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import textwrap
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psycopg
from psycopg.rows import dict_row

from tests.livehttp import free_socket

COMMAND = [sys.executable, "-m", "b24bridge.cli"]


def free_port() -> int:
    sock = free_socket()
    port: int = sock.getsockname()[1]
    sock.close()
    return port


@dataclass
class Member:
    """One process of the fleet: what it runs, and the process running it now."""

    role: str  # "api" or "worker"
    index: int
    args: list[str]
    process: subprocess.Popen[bytes] | None = None
    starts: int = 0
    kills: int = 0


@dataclass
class Fleet:
    data_dir: Path
    env: dict[str, str]
    apis: int = 1
    workers: int = 0
    members: list[Member] = field(default_factory=list)
    front_port: int = 0
    front: subprocess.Popen[bytes] | None = None
    _supervising: bool = False
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.front_port}"

    def __post_init__(self) -> None:
        self.ports = [free_port() for _ in range(self.apis)]
        self.front_port = free_port()
        # The load balancer runs in a process of its own: in this one it would share an interpreter lock with the
        # sandbox and the test, and hold the calls back.
        targets = [f"127.0.0.1:{port}" for port in self.ports]
        self.front = subprocess.Popen(
            [sys.executable, "-m", "tests.tcpproxy", str(self.front_port), *targets],
            stdout=subprocess.PIPE, cwd=Path(__file__).resolve().parents[2],
        )  # fmt: skip
        assert self.front.stdout is not None and self.front.stdout.readline().startswith(b"listening")

    def start(self) -> Fleet:
        ports = self.ports
        self.env["B24BRIDGE_PUBLIC_URL"] = self.base_url
        for index, port in enumerate(ports):
            self.members.append(Member("api", index, ["serve", "--port", str(port)]))
        for index in range(self.workers):
            self.members.append(Member("worker", index, ["worker"]))
        for member in self.members:
            self._spawn(member)
        for port in ports:
            self._await_ready(f"http://127.0.0.1:{port}")
        self._supervising = True
        threading.Thread(target=self._supervise, daemon=True).start()
        return self

    def _spawn(self, member: Member) -> None:
        env = dict(self.env)
        if member.role == "worker":
            env["B24BRIDGE_METRICS_PORT"] = "0"
        log = (self.data_dir / f"{member.role}-{member.index}.log").open("ab")
        member.process = subprocess.Popen([*COMMAND, *member.args], env=env, stdout=log, stderr=log, cwd=self.data_dir)
        member.starts += 1

    def _await_ready(self, base: str, timeout: float = 90) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{base}/readyz", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise AssertionError(f"{base} did not become ready:\n{self.log_tail()}")

    def _supervise(self) -> None:
        """Start again every process that died (a supervisor's restart: systemd, docker's restart policy)."""
        while self._supervising:
            with self._lock:
                for member in self.members:
                    if member.process is not None and member.process.poll() is not None and self._supervising:
                        self._spawn(member)
            time.sleep(0.2)

    def kill(self, role: str, index: int = 0) -> None:
        """``kill -9`` one process; the supervisor starts it again."""
        with self._lock:
            member = next(m for m in self.members if m.role == role and m.index == index)
            assert member.process is not None
            os.kill(member.process.pid, signal.SIGKILL)
            member.process.wait(10)
            member.kills += 1

    def rss_mb(self) -> dict[str, float]:
        """Resident memory of every running process, by role and index."""
        sizes = {}
        for member in self.members:
            if member.process is not None and member.process.poll() is None:
                with open(f"/proc/{member.process.pid}/status") as status:
                    kb = next(int(line.split()[1]) for line in status if line.startswith("VmRSS:"))
                sizes[f"{member.role}-{member.index}"] = kb / 1024
        return sizes

    def log_tail(self, lines: int = 30) -> str:
        text = []
        for path in sorted(self.data_dir.glob("*.log")):
            tail = path.read_text(errors="replace").splitlines()[-lines:]
            text.append(f"--- {path.name}\n" + "\n".join(tail))
        return "\n".join(text)

    def stop(self) -> None:
        self._supervising = False
        with self._lock:
            for member in self.members:
                if member.process is not None and member.process.poll() is None:
                    member.process.terminate()
            for member in self.members:
                if member.process is None:
                    continue
                try:
                    member.process.wait(30)
                except subprocess.TimeoutExpired:
                    member.process.kill()
                    member.process.wait()
        if self.front is not None:
            self.front.terminate()
            self.front.wait(10)


def rows(url: str, sql: str, *args: Any) -> list[dict[str, Any]]:
    with psycopg.connect(url) as conn, conn.cursor(row_factory=dict_row) as cur:
        cur.execute(sql, args)
        return list(cur.fetchall())


def wait(condition: Any, what: str, timeout: float = 60, every: float = 0.25) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(every)


class RedisServer:
    """A Redis server of the test's own (the machine's redis-server binary), so stopping it disturbs nobody."""

    def __init__(self, directory: Path) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise RuntimeError("redis-server is not installed")
        self.port = free_port()
        self.directory = directory
        self.binary = binary
        self.process: subprocess.Popen[bytes] | None = None
        self.start()

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        args = [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                "--dir", str(self.directory)]  # fmt: skip
        self.process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait(lambda: _answers(self.port), "redis to answer", timeout=10, every=0.05)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(10)
        self.process = None


def _answers(port: int) -> bool:
    import socket

    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(16).startswith(b"+PONG")
    except OSError:
        return False


ROUTES = textwrap.dedent(
    """
    portals:
      partner:
        app: ${SOURCE_DOMAIN}
      acme:
        webhook: ${TARGET_WEBHOOK}
        plan: enterprise
    routes:
      partner-to-acme:
        source: partner
        target: acme
        triggers:
          robot: true
          hook: {secret: "${HOOK_SECRET}"}
        deal:
          TITLE: "{{ deal.TITLE }}"
          STAGE_ID: {from: STAGE_ID, map: {PREPARATION: NEW, EXECUTING: NEW, FINAL_INVOICE: NEW}}
    """
)


class SandboxCloud:
    """``b24bridge sandbox --portals N`` as a process of its own (a portal is elsewhere, not in the test's process),
    its portals reached over HTTP as the in-process ones are."""

    def __init__(self, count: int, limits: bool) -> None:
        from tests.sandbox.conftest import PortalClient

        first = _free_run(count)
        args = [*COMMAND, "sandbox", "--port", str(first), "--portals", str(count), "--plan", "cloud"]
        self.process = subprocess.Popen([*args, *([] if limits else ["--no-limits"])], stdout=subprocess.DEVNULL)
        self.portals = []
        for port in range(first, first + count):
            base = f"http://127.0.0.1:{port}"
            wait(lambda base=base: _serves(base), "the sandbox to start", timeout=30, every=0.1)
            portal = PortalClient(base, {})
            portal.base_url = base  # type: ignore[attr-defined]
            self.portals.append(portal)

    def __iter__(self) -> Any:
        return iter(self.portals)

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(10)


def _serves(base: str) -> bool:
    try:
        return httpx.get(f"{base}/_sandbox/", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


def _free_run(count: int) -> int:
    import socket

    for _ in range(50):
        first = free_port()
        sockets = []
        try:
            for port in range(first, first + count):
                sock = socket.socket()
                sockets.append(sock)
                sock.bind(("127.0.0.1", port))
            return first
        except OSError:
            continue
        finally:
            for sock in sockets:
                sock.close()
    raise RuntimeError(f"no run of {count} free ports")
