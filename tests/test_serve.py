"""``b24bridge serve`` as a real process on embedded defaults."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest


def _processes_mentioning(text: str) -> list[str]:
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if text in cmdline:
            found.append(f"{entry.name}: {cmdline}")
    return found


@pytest.mark.parametrize("stop", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_serve_on_embedded_defaults(tmp_path: Path, embedded_dir: Path, unused_tcp_port: int, stop: int) -> None:
    """Served, then stopped as a person (Ctrl-C) or a supervisor (SIGTERM: docker stop, systemd) stops it: either
    way its embedded PostgreSQL goes with it (SIGTERM used to end the process before that)."""
    data_dir = embedded_dir / "data"
    env = {k: v for k, v in os.environ.items() if not k.startswith("B24BRIDGE_")}
    env.update({"B24BRIDGE_DATA_DIR": str(data_dir), "B24BRIDGE_LOG_FORMAT": "json",
                "B24BRIDGE_FORWARDED_ALLOW_IPS": "10.0.0.0/8, 127.0.0.1"})  # fmt: skip
    executable = Path(sys.executable).parent / "b24bridge"
    command = [str(executable)] if executable.exists() else [sys.executable, "-m", "b24bridge.cli"]
    log_path = tmp_path / "serve.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            [*command, "serve", "--port", str(unused_tcp_port)], env=env, cwd=tmp_path, stdout=log, stderr=log
        )
    try:
        deadline = time.monotonic() + 90
        ready = None
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                ready = httpx.get(f"http://127.0.0.1:{unused_tcp_port}/readyz", timeout=2)
                if ready.status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.3)
        assert ready is not None and ready.status_code == 200, log_path.read_text()
        assert ready.json() == {"status": "ready"}
        # A proxy on a trusted address says who the client is; a header from elsewhere would be ignored.
        forwarded = {"X-Forwarded-For": "203.0.113.9", "X-Request-ID": "forwarded-check"}
        assert httpx.get(f"http://127.0.0.1:{unused_tcp_port}/healthz", headers=forwarded).status_code == 200
        assert (data_dir / "pg" / "postmaster.pid").exists()
        assert _processes_mentioning(str(data_dir / "pg")), "embedded PostgreSQL should be running"
    finally:
        if proc.poll() is None:
            proc.send_signal(stop)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    output = log_path.read_text()
    if stop == signal.SIGTERM:
        assert proc.returncode == 0, output  # a supervisor's stop is a clean stop
    [access] = [json.loads(line) for line in output.splitlines() if "forwarded-check" in line]
    assert access["client"] == "203.0.113.9", access
    assert "starting embedded PostgreSQL in" in output
    assert output.count("starting embedded PostgreSQL in") == 1
    assert not (data_dir / "pg" / "postmaster.pid").exists(), output
    assert _processes_mentioning(str(data_dir / "pg")) == [], output
