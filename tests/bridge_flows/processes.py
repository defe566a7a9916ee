"""b24bridge as real processes beside the sandbox portals: ``serve`` (the API) and ``worker`` processes that a test
may kill (``kill -9``) and start again."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from typing import Any

import httpx

from tests.bridge_flows.conftest import HOOK_SECRET, KEY, BridgeService
from tests.livehttp import free_socket

COMMAND = [sys.executable, "-m", "b24bridge.cli"]


class BridgeProcesses(BridgeService):
    """The same checks as :class:`BridgeService`, with the API and the workers as separate processes."""

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.api: subprocess.Popen[bytes] | None = None
        self.workers: list[subprocess.Popen[bytes]] = []
        self.env: dict[str, str] = {}
        self.port = 0

    def start(self, routes: str, **settings: Any) -> BridgeProcesses:
        path = self.data_dir / "routes.yaml"
        path.write_text(textwrap.dedent(routes))
        sock = free_socket()
        self.port = sock.getsockname()[1]
        sock.close()
        base = f"http://127.0.0.1:{self.port}"
        self.app = self.source.control(
            "POST",
            "/_sandbox/apps",
            {
                "name": "b24bridge",
                "scopes": ["crm", "bizproc", "user"],
                "install_url": f"{base}/install",
                "api_only": True,
            },
        )
        values = {
            "database_url": self.database_url,
            "data_dir": str(self.data_dir),
            "app_client_id": self.app["client_id"],
            "app_client_secret": self.app["client_secret"],
            "oauth_server": self.source.base_url,
            "public_url": base,
            "encryption_keys": KEY,
            "routes": str(path),
            # Short pauses, but as many attempts as the default schedule has and more: a fault rate of one in five
            # must not exhaust them.
            "retry_schedule": "0.5s,1s,1s,2s,2s,3s,3s,5s,5s,5s",
            "log_level": "WARNING",
            "log_format": "json",
            **{k: str(v) for k, v in settings.items()},
        }
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("B24BRIDGE_")}
        self.env |= {f"B24BRIDGE_{k.upper()}": str(v) for k, v in values.items()}
        self.env |= {"SOURCE_WEBHOOK": self.source.webhook_url, "TARGET_WEBHOOK": self.target.webhook_url,
                     "HOOK_SECRET": HOOK_SECRET, "SOURCE_DOMAIN": self.source.info["domain"],
                     "TARGET_DOMAIN": self.target.info["domain"]}  # fmt: skip
        log = (self.data_dir / "serve.log").open("ab")
        self.api = subprocess.Popen([*COMMAND, "serve", "--port", str(self.port)], env=self.env, stdout=log, stderr=log)
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"{base}/readyz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert self.api.poll() is None and time.monotonic() < deadline, (self.data_dir / "serve.log").read_text()
            time.sleep(0.2)
        return self

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start_worker(self) -> subprocess.Popen[bytes]:
        log = (self.data_dir / f"worker-{len(self.workers)}.log").open("ab")
        worker = subprocess.Popen([*COMMAND, "worker"], env=self.env, stdout=log, stderr=log)
        self.workers.append(worker)
        return worker

    def kill(self, worker: subprocess.Popen[bytes]) -> None:
        os.kill(worker.pid, signal.SIGKILL)
        worker.wait(10)

    def stop(self) -> None:
        for proc in [*self.workers, self.api]:
            if proc is not None and proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(20)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
        self.workers, self.api = [], None
