"""Durable accept rate of robot calls: valid calls stored with their job, per second, beside ``/healthz``.

    .venv/bin/python bench/ingest.py [--rounds 3] [--duration 10] [--connections 64] [--database-url URL]
                                     [--setting NAME=VALUE ...] [--json]

b24bridge runs as its own process (``b24bridge serve``, the API alone: ``B24BRIDGE_WORKER_IN_PROCESS=false``, so no
job runs and the figure is the door and the transaction that stores a run with its job), against PostgreSQL at the
given URL (``B24BRIDGE_TEST_DATABASE_URL``; without one an embedded PostgreSQL), installed in a sandbox portal
(``b24bridge sandbox``, used for the installation only). ``wrk`` (1 thread, ``--connections`` keep-alive
connections; ``apt-get install -y wrk``) then posts valid robot calls of the create-contact robot, each with a
workflow_id of its own (a duplicate would be answered without a write), the wire form of REFERENCE 5.4.

Figures, medians over ``--rounds`` rounds of ``--duration`` seconds, the two workloads interleaved round by round:

* accepted calls/s: calls answered 200 over wrk's duration, every answer a 200 (wrk's status-error count 0) and
  each one a run in the database (counted there: as many, plus at most one per connection sent as the clock ran
  out and stored after wrk stopped reading);
* p50 / p99: wrk's latency of the robot calls;
* ``/healthz`` req/s: the same server stack answering a constant JSON body, the ceiling of the stack itself;
* the ratio of the two, comparable across machines where the absolute figures are not.

Baseline (the issue "The door", before the door was built): 973 accepted calls/s, p50 62 ms, p99 150 ms, beside
13,162 req/s for ``/healthz`` (ratio 0.074). ``--setting NAME=VALUE`` passes a ``B24BRIDGE_*`` setting to the
server (experiments only; the recorded figures use none).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

from _common import Bridge, Sandbox, drop_database, free_port, make_database, postgres_admin

BASELINE = {"accepted_per_s": 973.0, "p50_ms": 62.0, "p99_ms": 150.0, "healthz_per_s": 13162.0}
PROPERTIES = {"first_name": "Ann", "last_name": "Lee", "phone": "+15551234567", "email": "ann@example.com"}

# wrk's Lua side: every request gets a workflow_id of its own; the summary goes out as one JSON line.
LUA = r"""
local body_template = %s
local prefix = %s
local counter = 0
request = function()
  counter = counter + 1
  local body = body_template:gsub("WORKFLOW", prefix .. "." .. counter)
  return wrk.format("POST", nil, {["Content-Type"] = "application/x-www-form-urlencoded"}, body)
end
done = function(summary, latency, requests)
  io.write(string.format(
    "RESULT {\"requests\": %%d, \"duration_us\": %%d, \"status_errors\": %%d, \"socket_errors\": %%d, " ..
    "\"p50_us\": %%d, \"p99_us\": %%d}\n",
    summary.requests, summary.duration, summary.errors.status,
    summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout,
    latency:percentile(50), latency:percentile(99)))
end
"""


def robot_call(member_id: str, domain: str, application_token: str) -> str:
    """A create-contact robot call as a portal sends it; ``WORKFLOW`` is replaced per request by wrk."""
    fields = {
        "workflow_id": "WORKFLOW",
        "code": "b24bridge_create_contact",
        "document_id[0]": "crm",
        "document_id[1]": "CCrmDocumentDeal",
        "document_id[2]": "DEAL_123",
        "document_type[0]": "crm",
        "document_type[1]": "CCrmDocumentDeal",
        "document_type[2]": "DEAL",
        "event_token": "WORKFLOW|A12345_67890_11111_22222|abcdefghijklmnopqrstuvwxyzABCDEF." + "0f3c" * 16,
        **{f"properties[{key}]": value for key, value in PROPERTIES.items()},
        "use_subscription": "Y",
        "timeout_duration": "0",
        "ts": str(int(time.time())),
        "auth[access_token]": "s6p6eclrvim6da22ft9ch94ekreb52lv",
        "auth[expires]": str(int(time.time()) + 3600),
        "auth[expires_in]": "3600",
        "auth[scope]": "crm,bizproc",
        "auth[domain]": domain,
        "auth[server_endpoint]": "https://oauth.bitrix.info/rest/",
        "auth[status]": "L",
        "auth[client_endpoint]": f"https://{domain}/rest/",
        "auth[member_id]": member_id,
        "auth[user_id]": "1",
        "auth[refresh_token]": "4s386p3q0tr8dy89xvmt96234v3dljg8",
        "auth[application_token]": application_token,
    }
    # Encoded as PHP's http_build_query does (brackets too: auth%5Bmember_id%5D); "WORKFLOW" stays plain letters.
    return "&".join(f"{quote(key, safe='')}={quote(value, safe='')}" for key, value in fields.items())


@dataclass
class Service:
    bridge: Bridge
    base: str
    database_url: str
    body: str


def start(sandbox: Sandbox, admin_url: str, settings: dict[str, str]) -> Service:
    from b24bridge.portals import crypto

    sandbox.control("POST", "/_sandbox/reset")
    sandbox.control("POST", "/_sandbox/config", {"limits_enabled": False})
    info = sandbox.control("GET", "/_sandbox/")
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    app = sandbox.control(
        "POST",
        "/_sandbox/apps",
        {"name": "b24bridge", "scopes": ["crm", "bizproc", "user"], "install_url": f"{base}/install", "api_only": True},
    )
    database_url = make_database(admin_url)
    bridge = Bridge(
        {
            "database_url": database_url,
            "data_dir": tempfile.mkdtemp(prefix="b24bench-"),
            "port": str(port),
            "public_url": base,
            "app_client_id": app["client_id"],
            "app_client_secret": app["client_secret"],
            "oauth_server": sandbox.url,
            "encryption_keys": "k1:" + crypto.new_key(),
            "worker_in_process": "false",
            "log_level": "ERROR",
            "log_format": "json",
            **settings,
        }
    )
    try:
        installed = sandbox.control("POST", f"/_sandbox/apps/{app['client_id']}/install")
        if not (installed.get("install_call") or {}).get("ok"):
            raise RuntimeError(f"installation failed: {installed.get('install_call')}")
    except BaseException:
        bridge.stop()
        raise
    member_id, domain = str(info["member_id"]), str(info["domain"])
    body = robot_call(member_id, domain, installed["app"]["application_token"])
    return Service(bridge, base, database_url, body)


def runs(database_url: str) -> int:
    import psycopg

    with psycopg.connect(database_url) as conn:
        row = conn.execute("SELECT count(*) FROM runs").fetchone()
    return int(row[0]) if row else 0


def wrk(url: str, duration: float, connections: int, body: str | None = None) -> dict[str, Any]:
    """One wrk run: GETs of ``url``, or POSTs of ``body`` with a workflow_id of their own per request."""
    command = ["wrk", "-t1", f"-c{connections}", f"-d{duration:g}s", "--timeout", "10s"]
    if body is None:
        out = subprocess.run([*command, url], capture_output=True, text=True, check=True).stdout
    else:
        with tempfile.NamedTemporaryFile("w", suffix=".lua") as script:
            script.write(LUA % (json.dumps(body), json.dumps(uuid.uuid4().hex[:12])))
            script.flush()
            out = subprocess.run([*command, "-s", script.name, url], capture_output=True, text=True, check=True).stdout
        match = re.search(r"^RESULT (.*)$", out, re.MULTILINE)
        if match is None:
            raise RuntimeError(f"cannot parse wrk output:\n{out}")
        result: dict[str, Any] = json.loads(match.group(1))
        return result
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    rate = re.search(r"Requests/sec:\s+([\d.]+)", out)
    if errors or rate is None:
        raise RuntimeError(f"{url}: unexpected wrk output\n{out}")
    return {"per_s": float(rate.group(1))}


def measure(service: Service, rounds: int, duration: float, connections: int) -> dict[str, Any]:
    url = f"{service.base}/robots/b24bridge_create_contact"
    wrk(url, 1.0, connections, service.body)  # warm-up: connections, caches, the pool
    wrk(f"{service.base}/healthz", 1.0, connections)
    accepted, p50, p99, healthz = [], [], [], []
    for _ in range(rounds):
        before = runs(service.database_url)
        result = wrk(url, duration, connections, service.body)
        stored = runs(service.database_url) - before
        if result["status_errors"] or result["socket_errors"]:
            raise RuntimeError(f"robot calls not all answered 200: {result}")
        # wrk counts the answers it read; calls it sent as the clock ran out may be stored unanswered.
        if not 0 <= stored - result["requests"] <= connections:
            raise RuntimeError(f"{result['requests']} calls answered, {stored} runs stored")
        accepted.append(result["requests"] / (result["duration_us"] / 1e6))
        p50.append(result["p50_us"] / 1000)
        p99.append(result["p99_us"] / 1000)
        healthz.append(wrk(f"{service.base}/healthz", duration, connections)["per_s"])
    figures = {
        "accepted_per_s": statistics.median(accepted),
        "p50_ms": statistics.median(p50),
        "p99_ms": statistics.median(p99),
        "healthz_per_s": statistics.median(healthz),
        "rounds": {"accepted_per_s": accepted, "p50_ms": p50, "p99_ms": p99, "healthz_per_s": healthz},
    }
    figures["ratio"] = figures["accepted_per_s"] / figures["healthz_per_s"]
    return figures


def report(figures: dict[str, Any], args: argparse.Namespace) -> None:
    base_ratio = BASELINE["accepted_per_s"] / BASELINE["healthz_per_s"]
    rounds = figures["rounds"]
    print(f"robot calls, {args.connections} connections, {args.rounds} x {args.duration:g} s (medians; rounds)")
    print(f"  accepted calls/s : {figures['accepted_per_s']:9,.0f}   {_rounds(rounds['accepted_per_s'], '.0f')}")
    print(f"  p50 / p99        : {figures['p50_ms']:6.1f} ms / {figures['p99_ms']:.1f} ms")
    print(f"  /healthz req/s   : {figures['healthz_per_s']:9,.0f}   {_rounds(rounds['healthz_per_s'], '.0f')}")
    print(f"  ratio            : {figures['ratio']:9.3f}   (baseline {base_ratio:.3f})")
    verdict = "OK" if figures["ratio"] >= base_ratio * 0.9 else "WORSE THAN THE BASELINE"
    print(
        f"baseline: {BASELINE['accepted_per_s']:,.0f} calls/s, p50 {BASELINE['p50_ms']:g} ms, "
        f"p99 {BASELINE['p99_ms']:g} ms beside {BASELINE['healthz_per_s']:,.0f} req/s -> {verdict} "
        f"(ratio {figures['ratio'] / base_ratio:.2f}x the baseline's)"
    )
    print(f"machine: {platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}")


def _rounds(values: list[float], spec: str) -> str:
    return " / ".join(format(value, spec) for value in values)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--database-url", default=os.environ.get("B24BRIDGE_TEST_DATABASE_URL"))
    parser.add_argument("--setting", action="append", default=[], metavar="NAME=VALUE")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON too")
    args = parser.parse_args()
    if subprocess.run(["which", "wrk"], capture_output=True).returncode != 0:
        print("bench/ingest.py needs wrk (apt-get install -y wrk)", file=sys.stderr)
        return 2
    settings = dict(item.split("=", 1) for item in args.setting)

    admin_url, release_postgres = postgres_admin(args.database_url)
    sandbox = Sandbox()
    service = None
    try:
        service = start(sandbox, admin_url, settings)
        figures = measure(service, args.rounds, args.duration, args.connections)
    finally:
        if service is not None:
            service.bridge.stop()
            drop_database(admin_url, service.database_url)
        sandbox.stop()
        release_postgres()
    report(figures, args)
    if args.json:
        print(json.dumps(figures))
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    sys.exit(main())
