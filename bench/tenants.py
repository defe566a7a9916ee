"""One portal's flood never stalls the others: quiet portals' robot latency with and without a flooding neighbour.

    .venv/bin/python bench/tenants.py [--portals 50] [--flood 5000] [--duration 120] [--database-url URL]
                                      [--setting NAME=VALUE ...] [--json] [--bridge] [--keep-data]

A sandbox cloud of ``--portals`` portals (``b24bridge sandbox --portals N``, cloud limits on each) and one
``b24bridge serve`` on its defaults (the embedded PostgreSQL, or ``--database-url``; the in-process worker),
installed in every portal as one Marketplace application with its create-contact robot on a deal stage. Two runs,
each on a fresh world and database:

* **quiet**: every portal but the first moves one deal a second into the robot's stage for ``--duration`` seconds;
* **flood**: the same, and at its start the first portal moves ``--flood`` deals at once.

Latency is the portal's own: from the robot call being sent to the workflow being answered (the sandbox's workflow
record, ``started_at`` to ``finished_at``). Printed: the quiet portals' p50/p99 in both runs and their ratio; the
flooding portal's throughput (its runs from the first call to the last answer) beside its bound, the most its cloud
limits allow (a burst of 50 requests, 2 more a second, 50 commands each, 2 commands a run: the contact and the
answer in one chain); limit errors (503 QUERY_LIMIT_EXCEEDED, 429) counted by every portal. Targets (issue 16):
quiet p99 with the flood at most 2x without it and at most 1 s; the flood at least 0.9 of its bound; 0 limit errors.

``--bridge`` measures the same for the bridge: the robot is the bridge robot, portal 2k hands its deals to portal
2k+1 (route ``rk``), so 25 sources for 50 portals; the first hands over ``--flood`` deals at once (the issue: 2,000)
while the other sources hand over one a second. A run costs its source two commands too (the deal read, the
answer), so the bound is the same.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from _common import (
    ROBOT_PROPERTIES,
    ROOT,
    STAGE,
    Bridge,
    drop_database,
    free_port,
    make_database,
    postgres_admin,
    stop_process,
)

BURST, DRAIN, MAX_BATCH, COMMANDS_PER_RUN = 50, 2.0, 50, 2
TARGETS = {"quiet_p99_ratio": 2.0, "quiet_p99_s": 1.0, "flood_of_bound": 0.9}


def bound_seconds(runs: int) -> float:
    """The least time ``runs`` robot runs take at one portal's cloud limits."""
    requests = runs * COMMANDS_PER_RUN / MAX_BATCH
    return max(0.0, (requests - BURST) / DRAIN)


class Cloud:
    """``b24bridge sandbox --portals N`` on consecutive ports, driven through each portal's control API."""

    def __init__(self, portals: int) -> None:
        self.first_port = _free_run(portals)
        self.urls = [f"http://127.0.0.1:{self.first_port + i}" for i in range(portals)]
        cmd = [sys.executable, "-m", "b24bridge.cli", "sandbox", "--port", str(self.first_port),
               "--portals", str(portals), "--plan", "cloud"]  # fmt: skip
        self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=ROOT)
        self.http = httpx.Client(timeout=120)
        deadline = time.monotonic() + 60
        while True:
            try:
                self.infos = [self.control(i, "GET", "/_sandbox/") for i in range(portals)]
                return
            except httpx.HTTPError:
                if time.monotonic() > deadline:
                    raise RuntimeError("the sandbox cloud did not start") from None
                time.sleep(0.2)

    def control(self, index: int, method: str, path: str, body: Any = None) -> Any:
        answer = self.http.request(method, f"{self.urls[index]}{path}", json=body)
        answer.raise_for_status()
        return answer.json()

    def rest(self, index: int, method: str, params: dict[str, Any]) -> Any:
        hook = self.infos[index]["webhooks"][0]["url"]
        answer = self.http.post(f"{hook}{method}", json=params)
        answer.raise_for_status()
        return answer.json()

    def stop(self) -> None:
        stop_process(self.proc, 10)


def _free_run(count: int) -> int:
    """A first port with ``count`` free ports after it."""
    import socket

    for _ in range(50):
        first = free_port()
        try:
            sockets = []
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


@dataclass
class World:
    cloud: Cloud
    bridge: Bridge
    database_url: str
    deals: list[list[int]]  # per portal


def prepare(cloud: Cloud, admin_url: str | None, database_url: str | None, deals_per_portal: list[int],
            settings: dict[str, str], bridge_routes: bool = False, workers: int = 0) -> World:  # fmt: skip
    """A fresh world in every portal, b24bridge installed in each, its robot on STAGE, deals ready to move. With
    ``bridge_routes``, the robot is the bridge robot of route ``r{k}`` (portal 2k hands its deals to portal 2k+1)."""
    from b24bridge.portals import crypto
    from b24bridge.robots.definitions.create_contact import CODE

    for index in range(len(cloud.urls)):
        cloud.control(index, "POST", "/_sandbox/reset")
        cloud.control(index, "POST", "/_sandbox/config", {"limits_enabled": False})
    cloud.infos = [cloud.control(i, "GET", "/_sandbox/") for i in range(len(cloud.urls))]
    port = free_port()
    public = f"http://127.0.0.1:{port}"
    app = cloud.control(
        0,
        "POST",
        "/_sandbox/apps",
        {"name": "b24bridge", "scopes": ["crm", "bizproc", "user"], "install_url": f"{public}/install",
         "api_only": True, "marketplace": True},
    )  # fmt: skip
    for index in range(1, len(cloud.urls)):
        cloud.control(index, "POST", f"/_sandbox/apps/{app['client_id']}/register")
    database = database_url or (make_database(admin_url) if admin_url else None)
    data_dir = tempfile.mkdtemp(prefix="b24bench-tenants-")
    if bridge_routes:
        settings = {**settings, "routes": _write_routes(Path(data_dir), cloud)}
    connect = {
        "data_dir": data_dir,
        "port": str(port),
        "public_url": public,
        "app_client_id": app["client_id"],
        "app_client_secret": app["client_secret"],
        "oauth_server": cloud.urls[0],
        "encryption_keys": "k1:" + crypto.new_key(),
        "log_format": "json",
        **({"database_url": database} if database else {}),
    }
    bridge = Bridge({**connect, **settings}, workers)
    try:
        for index in range(len(cloud.urls)):
            installed = cloud.control(index, "POST", f"/_sandbox/apps/{app['client_id']}/install")
            if not (installed.get("install_call") or {}).get("ok"):
                raise RuntimeError(f"portal {index}: installation failed: {installed.get('install_call')}")
        deals: list[list[int]] = []
        for index, count in enumerate(deals_per_portal):
            if bridge_routes and index % 2 == 0:
                properties = {"route": f"r{index // 2}"}
                _place_robot(cloud, index, app["client_id"], BRIDGE_ROBOT, properties)
            elif not bridge_routes:
                _place_robot(cloud, index, app["client_id"], CODE, ROBOT_PROPERTIES)
            ids: list[int] = []
            while len(ids) < count:
                n = min(50, count - len(ids))
                cmd = {f"d{i}": "crm.deal.add?fields[TITLE]=Bench&fields[STAGE_ID]=NEW" for i in range(n)}
                ids += [int(v) for v in cloud.rest(index, "batch", {"cmd": cmd})["result"]["result"].values()]
            deals.append(ids)
        time.sleep(2 + 2 * len(cloud.urls) / DRAIN / 10)  # the set-up's requests drain from b24bridge's buckets
        for index in range(len(cloud.urls)):
            cloud.control(index, "POST", "/_sandbox/config", {"limits_enabled": True})
    except BaseException:
        bridge.stop()
        raise
    return World(cloud, bridge, database or "", deals)


BRIDGE_ROBOT = "b24bridge_bridge_deal"


def _write_routes(data_dir: Path, cloud: Cloud) -> str:
    """Routes ``r{k}``: portal 2k's deals, handed over by the bridge robot, become deals in portal 2k+1."""
    lines = ["portals:"]
    lines += [f"  p{i}: {{app: {info['domain']}}}" for i, info in enumerate(cloud.infos)]
    lines.append("routes:")
    for k in range(len(cloud.infos) // 2):
        lines += [f"  r{k}:", f"    source: p{2 * k}", f"    target: p{2 * k + 1}", "    triggers: {robot: true}",
                  '    deal: {TITLE: "{{ deal.TITLE }}"}']  # fmt: skip
    path = data_dir / "routes.yaml"
    path.write_text("\n".join(lines) + "\n")
    return str(path)


def _place_robot(cloud: Cloud, index: int, client_id: str, code: str, properties: dict[str, str]) -> None:
    """The robot on STAGE, once b24bridge has registered it there (its sync runs after the installation)."""
    rule = {"stage_id": STAGE, "client_id": client_id, "robot_code": code, "properties": properties}
    deadline = time.monotonic() + 120
    while True:
        try:
            cloud.control(index, "POST", "/_sandbox/automation/rules", rule)
            return
        except httpx.HTTPStatusError:
            if time.monotonic() > deadline:
                raise RuntimeError(f"portal {index}: robot {code} was not registered") from None
            time.sleep(0.2)


def run(world: World, flood: int, duration: float) -> dict[str, Any]:
    cloud = world.cloud
    quiet = [index for index in range(1, len(cloud.urls)) if world.deals[index]]
    started = time.time()
    admitted_before = int(cloud.control(0, "GET", "/_sandbox/limits")["admitted_requests"])
    if flood:
        cloud.control(0, "POST", "/_sandbox/deals/move", {"deal_ids": world.deals[0], "stage_id": STAGE})
    for index in quiet:
        body = {"deal_ids": world.deals[index], "stage_id": STAGE, "over_seconds": duration}
        cloud.control(index, "POST", "/_sandbox/deals/move", body)
    time.sleep(duration)
    deadline = time.monotonic() + max(120.0, bound_seconds(flood) * 3)
    while time.monotonic() < deadline:
        if not any(
            cloud.control(i, "GET", "/_sandbox/workflows?status=running")["total"] for i in range(len(cloud.urls))
        ):
            break
        time.sleep(1)
    quiet_latency = []
    by_time: dict[int, list[float]] = {}
    unanswered = 0
    for index in quiet:
        for workflow in cloud.control(index, "GET", "/_sandbox/workflows")["workflows"]:
            if workflow["status"] != "completed":
                unanswered += 1
            elif workflow.get("finished_at"):
                latency = workflow["finished_at"] - workflow["started_at"]
                quiet_latency.append(latency)
                by_time.setdefault(int((workflow["started_at"] - started) // 10) * 10, []).append(latency)
    result: dict[str, Any] = {"quiet": _percentiles(quiet_latency), "quiet_runs": len(quiet_latency),
                              "unanswered": unanswered,
                              "quiet_by_10s": {t: _percentiles(v) for t, v in sorted(by_time.items())}}  # fmt: skip
    if flood:
        flows = cloud.control(0, "GET", "/_sandbox/workflows")["workflows"]
        done = [wf for wf in flows if wf["status"] == "completed"]
        first = min(wf["started_at"] for wf in flows)
        last = max(wf["finished_at"] for wf in done) if done else first
        took = last - first
        rate = len(done) / took if took else 0.0
        result["flood"] = {"runs": len(done), "of": flood, "seconds": took, "runs_per_s": rate,
                           "bound_seconds": bound_seconds(flood)}  # fmt: skip
        result["flood"]["of_bound"] = result["flood"]["bound_seconds"] / took if took else 0
        # How full the flooding portal's requests were: the bound assumes 50 commands in each.
        requests = int(cloud.control(0, "GET", "/_sandbox/limits")["admitted_requests"]) - admitted_before
        result["flood"]["requests"] = requests
        result["flood"]["commands_per_request"] = len(done) * COMMANDS_PER_RUN / requests if requests else 0.0
        result["flood"]["batch_sizes"] = _busiest_batch_sizes(world.bridge.base_url)
        result["unanswered"] += flood - len(done)
    result["limit_errors"] = sum(_limit_errors(cloud, i) for i in range(len(cloud.urls)))
    result["wall"] = time.time() - started
    return result


def _busiest_batch_sizes(base_url: str) -> dict[str, int]:
    """b24bridge's own count of the commands in each request, for the portal it sent the most commands to (the
    flooding portal's source side; by requests a quiet portal's lone calls can be more): requests per bucket of
    ``b24bridge_bitrix_batch_size`` (``le`` its top)."""
    text = httpx.get(f"{base_url}/metrics", timeout=10).text
    buckets: dict[str, dict[str, float]] = {}
    commands: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith(("b24bridge_bitrix_batch_size_bucket{", "b24bridge_bitrix_batch_size_sum{")):
            labels, _, value = line.partition("} ")
            parts = dict(p.split("=", 1) for p in labels.split("{", 1)[1].split(","))
            portal = parts["portal"].strip('"')
            if line.startswith("b24bridge_bitrix_batch_size_sum{"):
                commands[portal] = float(value)
            else:
                buckets.setdefault(portal, {})[parts["le"].strip('"')] = float(value)
    if not buckets:
        return {}
    busiest = buckets[max(buckets, key=lambda portal: commands.get(portal, 0.0))]
    tops = sorted(busiest, key=lambda le: float("inf") if le == "+Inf" else float(le))
    counts, below = {}, 0.0
    for le in tops:
        counts[le] = int(busiest[le] - below)
        below = busiest[le]
    return counts


def _limit_errors(cloud: Cloud, index: int) -> int:
    limits = cloud.control(index, "GET", "/_sandbox/limits")
    return int(limits["refused_requests"]) + int(limits["refused_operating"])


def _percentiles(values: list[float]) -> dict[str, float]:
    if not values:
        return {"p50": float("nan"), "p99": float("nan")}
    ordered = sorted(values)
    return {"p50": statistics.median(ordered), "p99": ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--portals", type=int, default=50)
    parser.add_argument("--flood", type=int, default=5000)
    parser.add_argument("--duration", type=float, default=120.0)
    parser.add_argument("--database-url", default=None, help="an external database (default: the embedded one)")
    parser.add_argument("--setting", action="append", default=[], metavar="NAME=VALUE")
    parser.add_argument("--only", choices=["quiet", "flood"], help="one of the two runs (experiments)")
    parser.add_argument(
        "--workers", type=int, default=0, help="no worker in serve: this many `b24bridge worker` processes instead"
    )
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--keep-data", action="store_true", help="keep serve's data folder of each run (serve.log)")
    parser.add_argument(
        "--bridge", action="store_true", help="the bridge robot: portal 2k hands its deals to portal 2k+1 (route rk)"
    )
    args = parser.parse_args()
    settings = dict(item.split("=", 1) for item in args.setting)
    admin_url, release = postgres_admin(args.database_url) if args.database_url else (None, lambda: None)
    quiet_deals = int(args.duration) + 1
    cloud = Cloud(args.portals)
    results: dict[str, Any] = {}
    try:
        for name, flood in (("quiet", 0), ("flood", args.flood)):
            if args.only not in (None, name):
                continue
            per_portal = [flood or 1] + [quiet_deals] * (args.portals - 1)
            if args.bridge:  # only the sources (even portals) move deals; their targets (odd) only receive
                per_portal = [count if index % 2 == 0 else 0 for index, count in enumerate(per_portal)]
            world = prepare(cloud, admin_url, None, per_portal, settings, bridge_routes=args.bridge,
                            workers=args.workers)  # fmt: skip
            try:
                results[name] = run(world, flood, args.duration)
            finally:
                world.bridge.stop()
                if admin_url and world.database_url:
                    drop_database(admin_url, world.database_url)
                if args.keep_data:
                    print(f"{name}: serve's data folder (its log, its database) kept in {world.bridge.data_dir}")
                else:  # a 50-portal run leaves about 100 MB there
                    shutil.rmtree(world.bridge.data_dir, ignore_errors=True)
    finally:
        cloud.stop()
        release()
    report(results, args)
    if args.json:
        print(json.dumps(results))
    return 0


def report(results: dict[str, Any], args: argparse.Namespace) -> None:
    if args.only:
        print(json.dumps(results, indent=1))
        return
    quiet, flood = results["quiet"], results["flood"]
    ratio = flood["quiet"]["p99"] / quiet["quiet"]["p99"]
    quiet_count = len(range(2, args.portals, 2)) if args.bridge else args.portals - 1
    what = "deliveries by the bridge robot" if args.bridge else "robot calls"
    print(f"{args.portals} portals at cloud limits, {quiet_count} quiet at 1 call/s for {args.duration:g} s ({what})")
    for name, result in (("no flood", quiet), (f"flood of {args.flood}", flood)):
        print(f"  quiet portals, {name:<15} p50 {result['quiet']['p50'] * 1000:7.0f} ms   p99 "
              f"{result['quiet']['p99'] * 1000:7.0f} ms   ({result['quiet_runs']} runs)")  # fmt: skip
    print(f"  quiet p99 with / without the flood: {ratio:.2f}x")
    f = flood["flood"]
    print(f"  flooding portal: {f['runs']}/{f['of']} runs in {f['seconds']:.1f} s = {f['runs_per_s']:.1f} runs/s; "
          f"bound {f['bound_seconds']:.1f} s; {f['of_bound']:.3f} of the bound")  # fmt: skip
    print(f"  flooding portal's requests: {f['requests']} ({f['commands_per_request']:.1f} commands a request, "
          f"{COMMANDS_PER_RUN} a run; the bound takes {MAX_BATCH})")  # fmt: skip
    sizes = ", ".join(f"<={le}: {n}" for le, n in f.get("batch_sizes", {}).items() if n)
    print(f"  requests by commands at the portal b24bridge sent most commands to: {sizes or 'not measured'}")
    print(f"  limit errors (503/429) from every portal: {quiet['limit_errors']} / {flood['limit_errors']}; "
          f"unanswered workflows: {quiet['unanswered']} / {flood['unanswered']}")  # fmt: skip
    checks = [
        ("quiet p99 ratio", ratio, TARGETS["quiet_p99_ratio"], False),
        ("quiet p99 with flood (s)", flood["quiet"]["p99"], TARGETS["quiet_p99_s"], False),
        ("flood of its bound", f["of_bound"], TARGETS["flood_of_bound"], True),
        ("limit errors", quiet["limit_errors"] + flood["limit_errors"], 0, False),
    ]
    print("targets (issue 16):")
    for label, value, target, at_least in checks:
        met = value >= target if at_least else value <= target
        print(f"  {label:<28} {value:9.3f}  {'>=' if at_least else '<='} {target:g}  {'met' if met else 'MISSED'}")
    print(f"machine: {platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}")


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    sys.exit(main())
