"""The front door at full speed: durable robot-call acceptance and ``/healthz`` beside a bare app on the same stack.

    .venv/bin/python bench/ingest.py [--rounds 3] [--duration 10] [--connections 64] [--database-url URL]
                                     [--setting NAME=VALUE ...] [--json]

Three servers, each its own process, measured in the same run and interleaved round by round:

* **bare**: a Starlette app with one JSON route on the server stack ``serve`` runs on (``bench/_bare_app.py``: the
  same uvicorn options, protocol class and event loop): what the stack itself costs;
* **defaults**: ``b24bridge serve`` exactly as ``make run`` starts it: the embedded PostgreSQL in its own data
  folder, the in-process worker running the accepted calls' jobs against the sandbox portal (cloud limits), the
  default log level, JSON log lines to a file;
* **external**: ``b24bridge serve`` with the API alone (``B24BRIDGE_WORKER_IN_PROCESS=false``) on the PostgreSQL at
  ``--database-url`` (``B24BRIDGE_TEST_DATABASE_URL``; without one an embedded server started here stands in).

Both b24bridge servers are installed in a sandbox portal (``b24bridge sandbox``). ``wrk`` (one thread,
``--connections`` kept-alive connections; ``apt-get install -y wrk``) GETs ``/healthz`` of each, and POSTs valid
create-contact robot calls, each with a workflow id of its own, the wire form of REFERENCE 5.4. A robot call counts
as accepted when it was answered 200 and its run is in the database (counted there after each round: as many, plus
at most one per connection sent as the clock ran out). Figures are medians over the rounds; each is printed with its
ratio to the bare app's ``/healthz``, the figure that compares across machines.

Targets (issue 17), this 2-core machine, default log level: ``/healthz`` at least 0.5 of the bare app; durable
acceptance at least 2,000 calls/s with p99 at most 50 ms on the external PostgreSQL, at least 1,000 calls/s on the
defaults. Baseline (the issue, before the work): 376/s (p99 286 ms) external, 260/s (p99 382 ms) defaults,
``/healthz`` 2,433-2,690 req/s beside a bare app's 23,583.
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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

from _common import ROOT, Bridge, Sandbox, drop_database, free_port, make_database, postgres_admin, stop_process

BASELINE = {"external_per_s": 376.0, "external_p99_ms": 286.0, "defaults_per_s": 260.0, "healthz_per_s": 2560.0}
TARGETS = {"healthz_ratio": 0.5, "external_per_s": 2000.0, "external_p99_ms": 50.0, "defaults_per_s": 1000.0}
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
    name: str
    bridge: Bridge
    base: str
    database_url: str
    body: str
    cleanup: list[Any] = field(default_factory=list)

    def stop(self) -> None:
        self.bridge.stop()
        for step in self.cleanup:
            step()


def start(name: str, sandbox: Sandbox, settings: dict[str, str], database_url: str | None) -> Service:
    """b24bridge serve with ``settings`` (no database URL: its embedded PostgreSQL), installed in a new app of the
    sandbox portal."""
    from b24bridge.portals import crypto

    port = free_port()
    base = f"http://127.0.0.1:{port}"
    app = sandbox.control(
        "POST",
        "/_sandbox/apps",
        {"name": f"b24bridge-{name}", "scopes": ["crm", "bizproc", "user"], "install_url": f"{base}/install",
         "api_only": True},
    )  # fmt: skip
    data_dir = tempfile.mkdtemp(prefix=f"b24bench-{name}-")
    connect = {
        "data_dir": data_dir,
        "port": str(port),
        "public_url": base,
        "app_client_id": app["client_id"],
        "app_client_secret": app["client_secret"],
        "oauth_server": sandbox.url,
        "encryption_keys": "k1:" + crypto.new_key(),
        **({"database_url": database_url} if database_url else {}),
    }
    bridge = Bridge({**connect, **settings})
    service = Service(name, bridge, base, database_url or "", "")
    try:
        installed = sandbox.control("POST", f"/_sandbox/apps/{app['client_id']}/install")
        if not (installed.get("install_call") or {}).get("ok"):
            raise RuntimeError(f"installation failed: {installed.get('install_call')}")
        if database_url is None:
            service.database_url = _embedded_url(Path(data_dir), service)
        info = sandbox.info
        service.body = robot_call(str(info["member_id"]), str(info["domain"]), installed["app"]["application_token"])
    except BaseException:
        service.stop()
        raise
    return service


def _embedded_url(data_dir: Path, service: Service) -> str:
    """Attach to the embedded PostgreSQL the service started (and let go of it when the service stops)."""
    from b24bridge.db import EMBEDDED_DB_NAME, EmbeddedPostgres

    embedded = EmbeddedPostgres(data_dir / "pg")
    embedded.start()
    service.cleanup.append(embedded.stop)
    return embedded.url(EMBEDDED_DB_NAME)


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
        errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
        rate = re.search(r"Requests/sec:\s+([\d.]+)", out)
        if errors or rate is None:
            raise RuntimeError(f"{url}: unexpected wrk output\n{out}")
        return {"per_s": float(rate.group(1))}
    with tempfile.NamedTemporaryFile("w", suffix=".lua") as script:
        script.write(LUA % (json.dumps(body), json.dumps(uuid.uuid4().hex[:12])))
        script.flush()
        out = subprocess.run([*command, "-s", script.name, url], capture_output=True, text=True, check=True).stdout
    match = re.search(r"^RESULT (.*)$", out, re.MULTILINE)
    if match is None:
        raise RuntimeError(f"cannot parse wrk output:\n{out}")
    result: dict[str, Any] = json.loads(match.group(1))
    return result


def accept(service: Service, duration: float, connections: int) -> dict[str, float]:
    url = f"{service.base}/robots/b24bridge_create_contact"
    before = runs(service.database_url)
    result = wrk(url, duration, connections, service.body)
    stored = runs(service.database_url) - before
    if result["status_errors"] or result["socket_errors"]:
        raise RuntimeError(f"{service.name}: robot calls not all answered 200: {result}")
    # wrk counts the answers it read; calls it sent as the clock ran out may be stored unanswered.
    if not 0 <= stored - result["requests"] <= connections:
        raise RuntimeError(f"{service.name}: {result['requests']} calls answered, {stored} runs stored")
    return {
        "per_s": result["requests"] / (result["duration_us"] / 1e6),
        "p50_ms": result["p50_us"] / 1000,
        "p99_ms": result["p99_us"] / 1000,
    }


def measure(bare: str, services: dict[str, Service], rounds: int, duration: float, connections: int) -> dict[str, Any]:
    for service in services.values():  # warm-up: connections, caches, the pools
        wrk(f"{service.base}/robots/b24bridge_create_contact", 1.0, connections, service.body)
        wrk(f"{service.base}/healthz", 1.0, connections)
    wrk(f"{bare}/healthz", 1.0, connections)
    samples: dict[str, list[float]] = {}

    def add(key: str, value: float) -> None:
        samples.setdefault(key, []).append(value)

    for _ in range(rounds):
        add("bare_per_s", wrk(f"{bare}/healthz", duration, connections)["per_s"])
        for name, service in services.items():
            add(f"{name}_healthz_per_s", wrk(f"{service.base}/healthz", duration, connections)["per_s"])
            for key, value in accept(service, duration, connections).items():
                add(f"{name}_{key}", value)
    figures: dict[str, Any] = {key: statistics.median(values) for key, values in samples.items()}
    figures["rounds"] = samples
    return figures


# Where a sampled stack's innermost frame lives, first match wins: the parts of the stack a request crosses.
PARTS = (
    ("server (uvicorn, httptools)", ("uvicorn/", "httptools")),
    ("framework (starlette, fastapi, pydantic)", ("starlette/", "fastapi/", "pydantic")),
    ("b24bridge: the door (forms, checks, intake)", ("b24bridge/intake/", "b24bridge/forms", "b24bridge/robots/")),
    ("b24bridge: the rest", ("b24bridge/",)),
    ("database driver (psycopg, pool)", ("psycopg",)),
    ("event loop (asyncio, uvloop)", ("asyncio/", "uvloop")),
    ("logging (structlog, orjson, the writer thread)", ("structlog/", "logging/", "logsink")),
)


def profile(service: Service, duration: float, connections: int) -> dict[str, Any]:
    """One accept round with py-spy sampling the API process: the share of its busy samples per part of the stack
    (by the innermost frame), and how busy it was (busy samples over the samples a fully busy thread gives)."""
    rate = 200
    with tempfile.NamedTemporaryFile(suffix=".txt") as out:
        spy_path = Path(sys.executable).with_name("py-spy")
        spy = str(spy_path) if spy_path.exists() else "py-spy"
        pid = str(service.bridge.proc.pid)
        command = [spy, "record", "--format", "raw", "--rate", str(rate), "--duration", f"{duration:g}",
                   "--nonblocking", "--pid", pid, "--output", out.name]  # fmt: skip
        sampler = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        time.sleep(0.5)  # py-spy attaches
        accepted = accept(service, duration, connections)
        sampler.wait(duration + 30)
        counts: dict[str, int] = {}
        leaves: dict[str, int] = {}
        for line in Path(out.name).read_text().splitlines():
            stack, _, count = line.rpartition(" ")
            leaf = stack.rsplit(";", 1)[-1]
            part = next((name for name, marks in PARTS if any(mark in leaf for mark in marks)), "other")
            counts[part] = counts.get(part, 0) + int(count)
            leaves[leaf] = leaves.get(leaf, 0) + int(count)
    busy = sum(counts.values())
    top = sorted(leaves.items(), key=lambda kv: -kv[1])[:12]
    return {
        "calls_per_s": accepted["per_s"],
        "busy": busy / (rate * duration),
        "parts": {name: value / busy for name, value in sorted(counts.items(), key=lambda kv: -kv[1])} if busy else {},
        "functions": {name: value / busy for name, value in top} if busy else {},
    }


def report(figures: dict[str, Any], args: argparse.Namespace) -> None:
    bare = figures["bare_per_s"]
    print(f"{args.connections} connections, {args.rounds} x {args.duration:g} s, medians (rounds)")

    def line(label: str, key: str, unit: str = "/s") -> None:
        rounds = " / ".join(f"{value:.0f}" for value in figures["rounds"][key])
        print(f"  {label:<40} {figures[key]:9,.0f}{unit}  ratio to bare {figures[key] / bare:6.3f}   ({rounds})")

    line("bare Starlette /healthz", "bare_per_s")
    for name in ("defaults", "external"):
        if f"{name}_per_s" not in figures:
            continue
        line(f"{name}: /healthz", f"{name}_healthz_per_s")
        line(f"{name}: robot calls durably accepted", f"{name}_per_s")
        print(f"  {'':<40} p50 {figures[f'{name}_p50_ms']:.1f} ms, p99 {figures[f'{name}_p99_ms']:.1f} ms")
    print("targets (issue 17):")
    checks = [
        ("defaults /healthz / bare", "defaults_healthz_per_s", bare, TARGETS["healthz_ratio"], True),
        ("external /healthz / bare", "external_healthz_per_s", bare, TARGETS["healthz_ratio"], True),
        ("external calls/s", "external_per_s", 1.0, TARGETS["external_per_s"], True),
        ("external p99 ms", "external_p99_ms", 1.0, TARGETS["external_p99_ms"], False),
        ("defaults calls/s", "defaults_per_s", 1.0, TARGETS["defaults_per_s"], True),
    ]
    for label, key, divisor, target, at_least in checks:
        if key not in figures:
            print(f"  {label:<28} {'-':>10}  not measured in this run (--only)")
            continue
        value = figures[key] / divisor
        met = value >= target if at_least else value <= target
        print(f"  {label:<28} {value:10.3f}  {'>=' if at_least else '<='} {target:g}  {'met' if met else 'MISSED'}")
    print(
        f"baseline (issue 17): external {BASELINE['external_per_s']:.0f}/s p99 {BASELINE['external_p99_ms']:.0f} ms, "
        f"defaults {BASELINE['defaults_per_s']:.0f}/s, /healthz ~{BASELINE['healthz_per_s']:,.0f}/s"
    )
    print(f"machine: {platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--database-url", default=os.environ.get("B24BRIDGE_TEST_DATABASE_URL"))
    parser.add_argument("--only", choices=["defaults", "external"], help="measure one of the two (and the bare app)")
    parser.add_argument("--setting", action="append", default=[], metavar="NAME=VALUE")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON too")
    parser.add_argument(
        "--profile", action="store_true", help="one more round per service under py-spy: CPU by part of the stack"
    )
    args = parser.parse_args()
    if subprocess.run(["which", "wrk"], capture_output=True).returncode != 0:
        print("bench/ingest.py needs wrk (apt-get install -y wrk)", file=sys.stderr)
        return 2
    settings = dict(item.split("=", 1) for item in args.setting)

    admin_url, release_postgres = postgres_admin(args.database_url)
    sandbox = Sandbox()
    bare_port = free_port()
    bare = subprocess.Popen([sys.executable, str(ROOT / "bench" / "_bare_app.py"), str(bare_port)], cwd=ROOT)
    services: dict[str, Service] = {}
    external_db: str | None = None
    try:
        if args.only != "external":
            services["defaults"] = start("defaults", sandbox, settings, None)
        if args.only != "defaults":
            external_db = make_database(admin_url)
            services["external"] = start("external", sandbox, {"worker_in_process": "false", **settings}, external_db)
        figures = measure(f"http://127.0.0.1:{bare_port}", services, args.rounds, args.duration, args.connections)
        if args.profile:
            figures["profile"] = {
                name: profile(service, args.duration, args.connections) for name, service in services.items()
            }
    finally:
        for service in services.values():
            service.stop()
        if external_db is not None:
            drop_database(admin_url, external_db)
        stop_process(bare, 10)
        sandbox.stop()
        release_postgres()
    report(figures, args)
    for name, found in figures.get("profile", {}).items():
        print(
            f"profile of {name} under load ({found['calls_per_s']:,.0f} calls/s; its threads busy "
            f"{found['busy']:.0%} of one core's time), innermost frames by part:"
        )
        for part, share in found["parts"].items():
            print(f"  {share:6.1%}  {part}")
        print("  the innermost functions most sampled:")
        for function, share in found["functions"].items():
            print(f"  {share:6.1%}  {function}")
    if args.json:
        print(json.dumps(figures))
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    sys.exit(main())
