"""What the benchmark scripts share: free ports and server subprocesses, and the robot benchmarks' setup.

The robot benchmarks (``robot_throughput.py``, ``robot_latency.py``) drive the same arrangement: a sandbox portal
(``b24bridge sandbox``) and b24bridge (``b24bridge serve``) as separate processes, b24bridge installed in the portal,
its create-contact robot placed on a deal stage, and deals the sandbox moves into that stage to generate the load.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")

ROOT = Path(__file__).resolve().parent.parent
STAGE = "PREPARATION"  # the deal stage that carries the robot
# What every robot call asks for: enough for a valid contact, no duplicate search (two REST commands per run).
ROBOT_PROPERTIES = {"first_name": "Ann", "last_name": "Lee", "phone": "+15551234567", "email": "ann@example.com"}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def stop_process(process: subprocess.Popen[bytes], grace: float) -> None:
    """SIGTERM, then SIGKILL if it has not gone within ``grace`` seconds."""
    process.terminate()
    try:
        process.wait(grace)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def wait_serving(process: subprocess.Popen[bytes], port: int, name: str, ready: Callable[[], T]) -> T:
    """``ready()`` once ``process`` accepts connections on ``port`` (retried while it raises ``OSError``)."""
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return ready()
        except OSError:
            if process.poll() is not None:
                raise RuntimeError(f"{name} exited with {process.returncode}") from None
            time.sleep(0.05)
    process.kill()
    raise RuntimeError(f"{name} did not start")


@dataclass
class ServerProcess:
    """A server running as a subprocess on a loopback port."""

    port: int
    process: subprocess.Popen[bytes]

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def stop(self) -> None:
        stop_process(self.process, 10)


# --- the robot benchmarks ---------------------------------------------------------------------------------------


class Sandbox:
    """``b24bridge sandbox`` (cloud plan, limits on) as its own process, driven through its control API."""

    def __init__(self) -> None:
        import httpx

        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        cmd = [sys.executable, "-m", "b24bridge.cli", "sandbox", "--port", str(self.port), "--plan", "cloud"]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=ROOT)
        self.http = httpx.Client(base_url=self.url, timeout=60)
        for _ in range(200):
            try:
                self.info = self.control("GET", "/_sandbox/")
                return
            except httpx.HTTPError:
                time.sleep(0.05)
        raise RuntimeError("sandbox did not start")

    def control(self, method: str, path: str, body: Any = None) -> Any:
        answer = self.http.request(method, path, json=body)
        answer.raise_for_status()
        return answer.json()

    def rest(self, method: str, params: dict[str, Any]) -> Any:
        answer = self.http.post(f"{self.info['webhooks'][0]['url']}{method}", json=params)
        answer.raise_for_status()
        return answer.json()

    def stop(self) -> None:
        stop_process(self.proc, 10)


class Bridge:
    """``b24bridge serve`` (API and in-process worker) as its own process, configured through the environment.

    Only ``settings`` reach it: inherited ``B24BRIDGE_*`` variables are dropped and it runs in its data directory,
    where no ``.env`` is, so a developer's environment cannot change what is measured.
    """

    def __init__(self, settings: dict[str, str], workers: int = 0) -> None:
        """``workers`` > 0: ``serve`` without its in-process worker, and that many ``b24bridge worker`` processes."""
        import httpx

        if workers:
            settings = {**settings, "worker_in_process": "false", "metrics_port": "0"}
        inherited = {k: v for k, v in os.environ.items() if not k.startswith("B24BRIDGE_")}
        env = {**inherited, **{f"B24BRIDGE_{k.upper()}": v for k, v in settings.items()}}
        self.data_dir = Path(settings["data_dir"])
        self.workers: list[subprocess.Popen[bytes]] = []
        self.log_path = self.data_dir / "serve.log"
        cmd = [sys.executable, "-m", "b24bridge.cli", "serve"]
        with self.log_path.open("wb") as log:
            self.proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, cwd=self.data_dir)
        self.base_url = f"http://127.0.0.1:{settings['port']}"
        url = f"{self.base_url}/readyz"
        for _ in range(600):
            try:
                if httpx.get(url, timeout=1).status_code == 200:
                    self._start_workers(workers, env)
                    return
            except httpx.HTTPError:
                pass
            if self.proc.poll() is not None:
                raise RuntimeError(f"b24bridge serve exited during start-up:\n{self.log_tail()}")
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"b24bridge serve did not become ready:\n{self.log_tail()}")

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def _start_workers(self, count: int, env: dict[str, str]) -> None:
        for index in range(count):
            with (self.data_dir / f"worker-{index}.log").open("wb") as log:
                command = [sys.executable, "-m", "b24bridge.cli", "worker"]
                worker = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT, cwd=self.data_dir)
                self.workers.append(worker)

    def stop(self) -> None:
        for worker in self.workers:
            stop_process(worker, 30)
        stop_process(self.proc, 30)


def postgres_admin(database_url: str | None) -> tuple[str, Callable[[], None]]:
    """The admin URL of ``database_url``, or of an embedded PostgreSQL started in a temporary folder; and the call
    that lets go of it (stops the embedded one; nothing for a given URL)."""
    from b24bridge.db import EmbeddedPostgres, libpq_url

    if database_url:
        return libpq_url(database_url), lambda: None
    embedded = EmbeddedPostgres(Path(tempfile.mkdtemp(prefix="b24bench-pg-")) / "pg")
    return embedded.start(), embedded.stop


def make_database(admin_url: str) -> str:
    from urllib.parse import urlsplit, urlunsplit

    import psycopg
    from psycopg import sql

    name = f"b24bridge_bench_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    return urlunsplit(urlsplit(admin_url)._replace(path=f"/{name}"))


def drop_database(admin_url: str, database_url: str) -> None:
    from urllib.parse import urlsplit

    import psycopg
    from psycopg import sql

    name = urlsplit(database_url).path.lstrip("/")
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


def scrape(url: str) -> dict[str, float]:
    """HTTP requests b24bridge sent to the portal and the commands they carried, from its own /metrics."""
    import httpx

    totals = {"requests": 0.0, "commands": 0.0}
    for line in httpx.get(url, timeout=10).text.splitlines():
        if line.startswith("b24bridge_bitrix_batch_size_bucket{"):
            le = line.split('le="', 1)[1].split('"', 1)[0]
            totals[f"<={le}"] = float(line.rsplit(" ", 1)[1])
        if line.startswith("b24bridge_bitrix_batch_size_count{"):
            totals["requests"] += float(line.rsplit(" ", 1)[1])
        elif line.startswith("b24bridge_bitrix_batch_size_sum{"):
            totals["commands"] += float(line.rsplit(" ", 1)[1])
    return totals


def install_and_await_robot(
    control: Callable[..., Any], client_id: str, database_url: str, code: str, log_tail: Callable[[], str]
) -> None:
    """Install the application in the sandbox portal and wait (up to 20 s) until b24bridge has registered ``code``."""
    import psycopg

    control("POST", f"/_sandbox/apps/{client_id}/install")
    with psycopg.connect(database_url, autocommit=True) as conn:
        for _ in range(400):
            if conn.execute("SELECT 1 FROM robot_registrations WHERE code = %s", (code,)).fetchone():
                return
            time.sleep(0.05)
    raise RuntimeError(f"robot {code} was not registered after install:\n{log_tail()}")


@dataclass
class RobotSetup:
    """b24bridge serving, installed in the sandbox, its robot on ``STAGE``, and deals ready to be moved there."""

    bridge: Bridge
    public: str
    database_url: str
    client_id: str
    deal_ids: list[int]


def setup_robot(sandbox: Sandbox, admin_url: str, deals: int, settings: dict[str, str] | None = None) -> RobotSetup:
    """A fresh sandbox world and a fresh database, b24bridge started with what it needs to connect plus
    ``settings``, installed, its robot registered and placed on ``STAGE``, ``deals`` deals created.

    The sandbox's limits are left off (setup is not what is measured); the caller turns them on. The caller stops
    ``bridge`` (it is stopped here only when the setup fails).
    """

    from b24bridge.portals import crypto
    from b24bridge.robots.definitions.create_contact import CODE

    sandbox.control("POST", "/_sandbox/reset")
    sandbox.control("POST", "/_sandbox/config", {"limits_enabled": False})
    sandbox.info = sandbox.control("GET", "/_sandbox/")  # a reset issues a new webhook
    port = free_port()
    public = f"http://127.0.0.1:{port}"
    app = sandbox.control(
        "POST",
        "/_sandbox/apps",
        {
            "name": "b24bridge",
            "scopes": ["crm", "bizproc", "user"],
            "install_url": f"{public}/install",
            "api_only": True,
        },
    )
    database_url = make_database(admin_url)
    connect = {
        "database_url": database_url,
        "data_dir": tempfile.mkdtemp(prefix="b24bench-"),
        "port": str(port),
        "public_url": public,
        "app_client_id": app["client_id"],
        "app_client_secret": app["client_secret"],
        "oauth_server": sandbox.url,
        "encryption_keys": "k1:" + crypto.new_key(),
        "log_format": "json",
    }
    bridge = Bridge({**connect, **(settings or {})})
    try:
        install_and_await_robot(sandbox.control, app["client_id"], database_url, CODE, bridge.log_tail)
        sandbox.control(
            "POST",
            "/_sandbox/automation/rules",
            {"stage_id": STAGE, "client_id": app["client_id"], "robot_code": CODE, "properties": ROBOT_PROPERTIES},
        )
        deal_ids: list[int] = []
        while len(deal_ids) < deals:
            n = min(50, deals - len(deal_ids))
            cmd = {f"d{i}": "crm.deal.add?fields[TITLE]=Bench&fields[STAGE_ID]=NEW" for i in range(n)}
            deal_ids += [int(v) for v in sandbox.rest("batch", {"cmd": cmd})["result"]["result"].values()]
    except BaseException:
        bridge.stop()
        raise
    return RobotSetup(bridge, public, database_url, app["client_id"], deal_ids)
