"""The body-limit middleware keeps a server's memory flat under 200 MB bodies, in a server process of its own."""

from __future__ import annotations

import contextlib
import subprocess
import sys
from pathlib import Path

import pytest

from tests.bodylimit.conftest import MIB, Connection, chunked, head, pairs, post
from tests.livehttp import free_socket

REPO = Path(__file__).resolve().parents[2]

SERVER = """
import socket, sys, uvicorn
from tests.bodylimit.conftest import make_app
sock = socket.socket(fileno=int(sys.argv[1]))
uvicorn.Server(uvicorn.Config(make_app(), log_level="warning", access_log=False, lifespan="on")).run(sockets=[sock])
"""


def _status_kib(pid: int, key: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    raise KeyError(key)


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="needs /proc")
def test_a_200_mb_body_grows_server_memory_by_less_than_50_mb() -> None:
    sock = free_socket()
    sock.listen(64)
    process = subprocess.Popen(
        [sys.executable, "-c", SERVER, str(sock.fileno())],
        pass_fds=[sock.fileno()],
        cwd=REPO,
        stdout=subprocess.DEVNULL,  # structlog's default output: the middleware's info lines
    )
    try:
        port = sock.getsockname()[1]
        with Connection(port) as conn:  # answered once the server runs; also warms the code paths up
            conn.sock.settimeout(15)
            conn.sock.sendall(post("/robots/x", b"&".join(b"k%d=v" % i for i in range(900))))
            assert conn.answer().json() == {"fields": 900}
        baseline = _status_kib(process.pid, "VmRSS")
        with contextlib.suppress(OSError):  # reset the peak (VmHWM) to the current RSS
            Path(f"/proc/{process.pid}/clear_refs").write_text("5")
        with Connection(port) as conn:  # 200 MB of k=v& pairs, chunked
            conn.sock.sendall(head("POST", "/robots/x", "Transfer-Encoding: chunked"))
            assert conn.stream(chunked(pairs(200 * MIB)), 200 * MIB) < 20 * MIB
            assert conn.answer().status == 413
        with Connection(port) as conn:  # 200 MB of k=v& pairs, declared
            conn.sock.sendall(head("POST", "/robots/x", f"Content-Length: {200 * MIB}"))
            conn.stream(pairs(200 * MIB), 200 * MIB)
            assert conn.answer().status == 413
        with Connection(port) as conn:  # just under the cap: parsed, refused for its field count
            conn.sock.sendall(post("/robots/x", b"k=v&" * (MIB // 4 - 1)))
            assert "more than 1000 fields" in conn.answer().json()["error"]
        grown_mb = (_status_kib(process.pid, "VmHWM") - baseline) / 1024
        assert grown_mb < 50, f"server RSS peak grew by {grown_mb:.1f} MB"
    finally:
        process.terminate()
        process.wait(10)
        sock.close()
