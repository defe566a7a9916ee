"""Throughput of the sandbox portal, limits off, against a bare ASGI baseline on the same server stack.

    .venv/bin/python bench/sandbox.py [--rounds 3] [--duration 5] [--connections 32] [--client auto|wrk|asyncio]

Both servers are single uvicorn processes (same loop/http implementation, access log off) started as
subprocesses; the load generator is ``wrk`` when installed (``apt-get install -y wrk``), else a raw asyncio
keep-alive HTTP/1.1 client with N connections. Each workload is measured ``--rounds`` times, interleaved with
the baseline, and the medians are reported with their ratio.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from _common import ServerProcess, free_port, wait_serving

BASELINE_BODY = b'{"result":{"ID":"1","NAME":"Admin"},"time":{"start":1.0,"finish":1.0}}'


# --- servers (run in subprocesses) ---------------------------------------------------------------------------


async def baseline_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """A constant JSON answer: the floor cost of uvicorn + ASGI for one request."""
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [
                (b"content-type", b"application/json; charset=utf-8"),
                (b"content-length", str(len(BASELINE_BODY)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": BASELINE_BODY})


def serve(kind: str, port: int) -> None:
    import uvicorn

    app: Any
    if kind == "baseline":
        app = baseline_app
    else:
        from b24bridge.sandbox.app import create_app
        from b24bridge.sandbox.config import SandboxConfig
        from b24bridge.sandbox.runtime import Sandbox

        portal = Sandbox(SandboxConfig(port=port, limits_enabled=False))
        portal.bootstrap()
        app = create_app(sandbox=portal)
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", access_log=False)


# --- orchestration -------------------------------------------------------------------------------------------


@dataclass
class Server(ServerProcess):
    kind: str


def start(kind: str) -> Server:
    port = free_port()
    process = subprocess.Popen([sys.executable, __file__, "--serve", kind, "--port", str(port)])
    return wait_serving(process, port, f"{kind} server", lambda: Server(port, process, kind))


def http_json(url: str, body: Any = None) -> Any:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read())


# --- load generators -----------------------------------------------------------------------------------------


def run_wrk(url: str, duration: float, connections: int) -> float:
    out = subprocess.run(
        ["wrk", "-t1", f"-c{connections}", f"-d{duration:g}s", url], capture_output=True, text=True, check=True
    ).stdout
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if errors:
        raise RuntimeError(f"{url}: {errors.group(1)} non-2xx answers\n{out}")
    match = re.search(r"Requests/sec:\s+([\d.]+)", out)
    if not match:
        raise RuntimeError(f"cannot parse wrk output:\n{out}")
    return float(match.group(1))


async def _asyncio_load(url: str, duration: float, connections: int) -> float:
    parts = urlsplit(url)
    target = parts.path + (f"?{parts.query}" if parts.query else "")
    request = f"GET {target} HTTP/1.1\r\nHost: {parts.netloc}\r\nConnection: keep-alive\r\n\r\n".encode()
    deadline = time.monotonic() + duration
    done = 0

    async def worker() -> None:
        nonlocal done
        reader, writer = await asyncio.open_connection(parts.hostname, parts.port)
        try:
            while time.monotonic() < deadline:
                writer.write(request)
                head = await reader.readuntil(b"\r\n\r\n")
                if not head.startswith(b"HTTP/1.1 200"):
                    raise RuntimeError(f"{url}: {head.splitlines()[0]!r}")
                length = re.search(rb"(?i)content-length:\s*(\d+)", head)
                if length is None:
                    raise RuntimeError(f"{url}: the client needs Content-Length answers")
                await reader.readexactly(int(length.group(1)))
                done += 1
        finally:
            writer.close()

    started = time.monotonic()
    await asyncio.gather(*(worker() for _ in range(connections)))
    return done / (time.monotonic() - started)


def run_asyncio(url: str, duration: float, connections: int) -> float:
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    return asyncio.run(_asyncio_load(url, duration, connections))


# --- main ----------------------------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--duration", type=float, default=5.0, help="seconds per measurement")
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--client", choices=["auto", "wrk", "asyncio"], default="auto")
    parser.add_argument("--target", type=float, default=1500.0, help="calls/s the sandbox must reach")
    parser.add_argument("--serve", choices=["sandbox", "baseline"], help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(args.serve, args.port)
        return

    wrk = shutil.which("wrk")
    if args.client == "wrk" and not wrk:
        sys.exit("wrk is not installed (apt-get install -y wrk)")
    use_wrk = bool(wrk) and args.client != "asyncio"
    client = (
        "wrk (1 thread)" if use_wrk else "asyncio keep-alive HTTP/1.1 client" + ("" if wrk else " (no wrk installed)")
    )
    if not use_wrk and args.client == "auto":
        print("wrk not found: falling back to the built-in asyncio HTTP/1.1 client", file=sys.stderr)
    measure = run_wrk if use_wrk else run_asyncio

    baseline = start("baseline")
    sandbox = start("sandbox")
    try:
        info = http_json(f"{sandbox.base}/_sandbox/")
        hook = info["webhooks"][0]["url"]
        contact = http_json(f"{hook}crm.contact.add", {"fields": {"NAME": "Ann", "LAST_NAME": "Lee"}})["result"]
        workloads = {
            "baseline (bare ASGI, constant JSON)": f"{baseline.base}/",
            "sandbox user.current (webhook GET)": f"{hook}user.current",
            "sandbox crm.contact.get (webhook GET)": f"{hook}crm.contact.get?id={contact}",
        }
        for url in workloads.values():  # warm-up, and a check that every URL answers 200
            measure(url, 1.0, args.connections)
        results: dict[str, list[float]] = {name: [] for name in workloads}
        for _ in range(args.rounds):
            for name, url in workloads.items():
                results[name].append(measure(url, args.duration, args.connections))
    finally:
        sandbox.stop()
        baseline.stop()

    medians = {name: statistics.median(values) for name, values in results.items()}
    base = medians["baseline (bare ASGI, constant JSON)"]
    print(f"machine: {platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}")
    print(f"load generator: {client}, {args.connections} connections, {args.rounds} rounds x {args.duration:g}s")
    print(f"{'workload':42} {'median calls/s':>15} {'ratio to baseline':>18}   rounds")
    for name, median in medians.items():
        rounds = ", ".join(f"{v:.0f}" for v in results[name])
        print(f"{name:42} {median:15.0f} {median / base:18.3f}   [{rounds}]")
    slowest = min(v for k, v in medians.items() if k.startswith("sandbox"))
    verdict = "OK" if slowest >= args.target else "BELOW TARGET"
    print(f"target {args.target:.0f} calls/s for the sandbox: {verdict} (slowest workload {slowest:.0f})")


if __name__ == "__main__":
    main()
