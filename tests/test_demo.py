"""``b24bridge demo --no-wait`` as a user runs it on a fresh clone: a real process on free ports and an empty data
folder (embedded PostgreSQL included), which prints the deals that arrived and the contact the robot created, stops
everything, exits 0, and does it all well inside a minute."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

from tests.livehttp import free_socket

LIMIT = 60.0


def _ports() -> tuple[int, int]:
    """A free port for b24bridge, and a free one for the sandbox whose next port is free too (two portals)."""
    bridge = free_socket()
    try:
        for _ in range(50):
            first = free_socket()
            second = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            try:
                second.bind(("127.0.0.1", first.getsockname()[1] + 1))
                return bridge.getsockname()[1], first.getsockname()[1]
            except OSError:
                continue
            finally:
                first.close()
                second.close()
        raise AssertionError("no two free ports side by side")
    finally:
        bridge.close()


def _line(output: str, *parts: str) -> str:
    """The one output line that holds every part (a table row)."""
    found = [line for line in output.splitlines() if all(part in line for part in parts)]
    assert len(found) == 1, f"no single line with {parts} in:\n{output}"
    return found[0]


def test_demo_hands_deals_over_and_creates_a_contact_within_a_minute(embedded_dir: Path, tmp_path: Path) -> None:
    bridge_port, sandbox_port = _ports()
    data_dir = embedded_dir / "demo"
    # Nothing of the caller's configuration: the demo must work on defaults. Wide enough that no table row wraps.
    env = {k: v for k, v in os.environ.items() if not k.startswith("B24BRIDGE_")} | {"COLUMNS": "220"}
    command = [sys.executable, "-m", "b24bridge.cli", "demo", "--no-wait", "--port", str(bridge_port),
               "--sandbox-port", str(sandbox_port), "--data-dir", str(data_dir)]  # fmt: skip
    started = time.monotonic()
    done = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=2 * LIMIT)
    took = time.monotonic() - started
    print(f"b24bridge demo --no-wait: {took:.1f}s in all\n{done.stdout}")
    assert done.returncode == 0, done.stdout + done.stderr
    out = done.stdout

    assert "5 workflows answered, 5 runs in the run log" in out
    # Every partner deal arrived with its contact and rows; the first one moved on, and its Acme deal followed.
    first = _line(out, "1 Website redesign", "Website redesign", "PREPAYMENT_INVOICE", "Olivia Brown, +15550100001")
    assert "2 rows, 2,580.00" in first and first.count("run ") == 2
    others = (("CRM rollout", "Liam Chen", "1 row, 490.00"), ("Support plan", "Emma Novak", "1 row, 400.00"))
    for title, person, rows in others:
        assert rows in _line(out, title, "NEW", person)
    # The robot made a contact of the website request, its phone normalised.
    _line(out, "Ann Lee", "+15551234567", "ann.lee@example.com", "run ")
    assert "dead" not in out and "failed" not in out
    assert f"admin page: http://127.0.0.1:{bridge_port}/" in out
    assert f"partner portal: http://127.0.0.1:{sandbox_port}" in out
    assert (data_dir / "routes.yaml").is_file()
    # Everything stopped: the embedded PostgreSQL too.
    assert not (data_dir / "pg" / "postmaster.pid").exists()
    assert took < LIMIT, f"the demo took {took:.1f}s"
