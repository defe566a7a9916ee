"""The door probed as an attacker and a sloppy client would: b24bridge running, installed in a sandbox portal.

Two ways to run it: in this process (uvicorn in a thread, the stack ``serve`` runs: ``create_service`` on
``server_options``), for what is answered; and ``b24bridge serve`` as a process of its own, for what only a
process shows (its memory, its log).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import pytest

from b24bridge.robots.definitions.create_contact import CODE
from tests.livehttp import free_socket
from tests.portals.conftest import KEY
from tests.robots.conftest import RobotBridge, _robots_sandbox, bridge_factory, robots_db, sandbox

__all__ = ["_robots_sandbox", "bridge_factory", "robots_db", "sandbox"]  # fixtures, used by name

READ_TIMEOUT = 1.0  # B24BRIDGE_BODY_READ_TIMEOUT of the servers here: slow senders are cut off quickly


@dataclass
class Portal:
    """b24bridge serving and installed: what a genuine robot call of that portal carries."""

    bridge: RobotBridge
    member_id: str
    domain: str
    application_token: str

    @property
    def robot_url(self) -> str:
        return f"{self.bridge.base_url}/robots/{CODE}"

    def call(self, workflow_id: str = "wf.1", **fields: str) -> dict[str, str]:
        """The flat fields of a valid create-contact robot call (REFERENCE 5.4), ``fields`` replaced or added."""
        call = {
            "workflow_id": workflow_id,
            "code": CODE,
            "document_id[0]": "crm",
            "document_id[1]": "CCrmDocumentDeal",
            "document_id[2]": "DEAL_1",
            "event_token": f"{workflow_id}|A1_2_3_4|{'a' * 32}.{'0' * 64}",
            "properties[first_name]": "Ann",
            "properties[phone]": "+15551234567",
            "use_subscription": "Y",
            "timeout_duration": "0",
            "ts": "1717000000",
            "auth[member_id]": self.member_id,
            "auth[domain]": self.domain,
            "auth[application_token]": self.application_token,
        }
        return call | fields


def encode(fields: dict[str, str]) -> bytes:
    """A form body with the names' brackets left as PHP sends them and every value percent-encoded."""
    return "&".join(f"{quote(k, safe='[]')}={quote(v, safe='')}" for k, v in fields.items()).encode()


@pytest.fixture
def portal(bridge_factory: Callable[..., RobotBridge]) -> Portal:
    bridge = bridge_factory(worker_in_process=False, settings={"body_read_timeout": READ_TIMEOUT})
    auth = bridge.install()["install_call"]["payload"]["auth"]
    return Portal(bridge, auth["member_id"], auth["domain"], auth["application_token"])


# --- b24bridge serve as a process of its own ----------------------------------------------------------------------


@dataclass
class Served:
    process: subprocess.Popen[bytes]
    port: int
    log_path: Path

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def log(self) -> list[dict[str, Any]]:
        lines = self.log_path.read_text(errors="replace").splitlines()
        return [json.loads(line) for line in lines if line.startswith("{")]

    def raw_log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def status_kib(self, key: str) -> int:
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1])
        raise KeyError(key)


@pytest.fixture(scope="module")
def served(make_migrated_database: Callable[[], str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    """``b24bridge serve`` (API only, DEBUG JSON log, 1 s body read timeout) on a database of its own."""
    data_dir = tmp_path_factory.mktemp("served")
    sock = free_socket()  # a free port, released for serve to take
    port = sock.getsockname()[1]
    sock.close()
    env = {k: v for k, v in os.environ.items() if not k.startswith("B24BRIDGE_")}
    env |= {
        "B24BRIDGE_DATABASE_URL": make_migrated_database(),
        "B24BRIDGE_DATA_DIR": str(data_dir),
        "B24BRIDGE_PORT": str(port),
        "B24BRIDGE_ENCRYPTION_KEYS": KEY,
        "B24BRIDGE_WORKER_IN_PROCESS": "false",
        "B24BRIDGE_BODY_READ_TIMEOUT": str(READ_TIMEOUT),
        "B24BRIDGE_LOG_LEVEL": "DEBUG",
        "B24BRIDGE_LOG_FORMAT": "json",
    }
    log_path = data_dir / "serve.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "b24bridge.cli", "serve"], env=env, cwd=data_dir, stdout=log, stderr=log
        )
    served = Served(process, port, log_path)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"{served.base_url}/readyz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"b24bridge serve did not start:\n{served.raw_log()[-3000:]}")
            time.sleep(0.1)
        yield served
    finally:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
