"""The bridge end to end on b24bridge's default settings: deals from portal 1 to portal 2, cloud limits on both.

    .venv/bin/python bench/bridge_e2e.py [--deals 1000] [--fire-seconds 1] [--seconds 60] [--rates 1,10]
                                         [--only throughput|latency] [--contacts 40] [--companies 10]
                                         [--timeout 300] [--database-url URL] [--log-level ERROR] [--keep]
                                         [--json] [--dump FILE] [--set NAME=VALUE ...]

Everything runs as a separate process: ``b24bridge sandbox --portals 2`` (two portals in one server sharing one
OAuth server, cloud plan, limits on: burst 50 requests, drain 2 requests/s, per portal) and ``b24bridge serve`` (API
and in-process worker) on its DEFAULT settings: it gets only what it needs to connect (database URL, data
directory, port, public URL, application credentials, OAuth server, encryption key, the route file, log level and
format); inherited ``B24BRIDGE_*`` variables are dropped and it runs where no ``.env`` is. ``--set`` changes a
setting for an experiment; recorded figures use none.

The route (as in tests/bridge_flows/volume.py, with cloud limits on both sides): source = portal 1, where
b24bridge is installed as an application and its bridge robot sits on the stage PREPARATION; target = portal 2
through its incoming webhook. The deal's contact is matched by phone, its company by tax number (requisite
RQ_INN), both shared between deals (``--contacts``, ``--companies``); two product rows per deal; the responsible
user matched by e-mail. The robot trigger rather than the outbound-webhook rule: it is what an installed partner
uses, it makes the source an OAuth portal keyed by member_id, and it adds the answer to the workflow
(``bizproc.event.send``: one more command and one more round trip on the source per deal), so it is the heavier
and richer case; the webhook rule runs the same delivery minus the answer.

Each workload gets a fresh world (``POST /_sandbox/reset`` on both portals) and a fresh database (dropped after):
b24bridge installed, the world built with limits off, one warm-up deal (not counted), b24bridge's own copy of the
buckets drained, limits on, then the sandbox moves the deals into the stage itself (``POST /_sandbox/deals/move``):

* throughput: ``--deals`` deals over ``--fire-seconds``. Deals/s = deals / (first move -> last workflow answered):
  with the robot a hand-over is done when its workflow has the target deal's id, and every command counted was
  sent inside that window (first move -> last target deal created is printed too). Commands and HTTP requests per
  portal come from b24bridge's /metrics (``b24bridge_bitrix_batch_size_count``/``_sum`` by ``portal``: the source
  is labelled by its member_id, the target by its domain). The bound, per portal: over a window of T s the bucket
  admits burst + drain * T requests of at most 50 commands, so it allows (burst + drain * T) * 50 / c deals, c
  being the commands per deal measured on that portal; bound = that / T, T the measured window; the tighter portal
  binds; ratio = measured / bound. Also shown: the least time the limits allow for these deals (T_min, requests
  ceil(N c / 50) beyond the burst at drain/s) and the steady-state bound drain * 50 / c.
* latency: ``rate`` deals/s for ``--seconds`` (move i at i/rate s). Per deal: stage change -> target deal created.
  Both ends are read from the sandbox, one process, one clock (``time.time()``, microseconds): the stage change is
  the workflow's ``started_at`` (the robot's workflow starts inside the move); the creation is the target deal's
  ``DATE_CREATE`` as the portal stores it (REST shows it to the second only, so it is read from the target's saved
  world, ``POST /_sandbox/state/save``). A deal not delivered counts as infinitely late. Also shown: stage change
  -> workflow answered, requests per deal, and where the time goes (steps below).

Steps of a deal (p50 / p99 each), joining the sandbox's records with b24bridge's run log (same machine clock):
dispatch = move -> robot call sent; accept = -> run stored (runs.created_at); queue = -> job started
(runs.started_at); read = -> the source read done (the deal, its contact, company: run_calls.at); write = -> target
deal created; finish = -> run finished (runs.finished_at); answer = -> workflow answered. ``--dump FILE``
writes these times for every deal; ``--log-level INFO --keep`` keeps b24bridge's request log (one JSON line per HTTP
request to a portal: portal, method, commands, duration) for a closer look.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from _bridge_report import (
    LATENCY_TARGETS,
    QUANTILES,
    THROUGHPUT_TARGET,
    common,
    latencies,
    paste_block,
    report,
)
from _bridge_world import BURST, DRAIN, MAX_BATCH, Cloud, Setup, fire_and_wait, prepare
from _common import drop_database, postgres_admin
from _measure import machine_info, met, quantile, rounded

# --- workloads -------------------------------------------------------------------------------------------------


def bound(deals: int, commands_per_deal: float, window: float) -> dict[str, float | None]:
    """What one portal's bucket allows for ``deals`` deals of ``commands_per_deal`` commands each."""
    if commands_per_deal <= 0 or window <= 0:
        return {"deals_per_s": None, "t_min_s": None, "steady_deals_per_s": None}
    allowed = (BURST + DRAIN * window) * MAX_BATCH / commands_per_deal  # deals within the window
    requests = math.ceil(deals * commands_per_deal / MAX_BATCH)
    return {
        "deals_per_s": round(allowed / window, 2),
        "t_min_s": round(max(0.0, (requests - BURST) / DRAIN), 2),
        "steady_deals_per_s": round(DRAIN * MAX_BATCH / commands_per_deal, 2),
    }


def throughput(cloud: Cloud, admin_url: str, args: argparse.Namespace) -> dict[str, Any]:
    setup = prepare(cloud, admin_url, args.deals, args)
    try:
        seen = fire_and_wait(cloud, setup, args.fire_seconds, args.timeout)
    finally:
        finish(setup, admin_url, args)
    fired = len(setup.deal_ids)
    result, deals = common(cloud, seen, setup, fired)
    result |= {"workload": "throughput", "fire_seconds": args.fire_seconds}
    first = min(d["moved"] for d in deals)
    complete = result["answered"] == fired
    last_answer = max((d["answered"] for d in deals if d["answered"] is not None), default=None)
    last_created = max((d["created"] for d in deals if d["created"] is not None), default=None)
    window = last_answer - first if last_answer is not None and complete else None
    result["window_s"] = rounded(window) if window is not None else None
    result["created_window_s"] = rounded(last_created - first) if last_created is not None else None
    result["deals_per_s"] = round(fired / window, 2) if window else None
    result["created_per_s"] = (
        round(result["delivered"] / (last_created - first), 2) if last_created is not None else None
    )
    bounds = {}
    for name in ("source", "target"):
        cpd = result["portals"][name]["commands_per_deal"] or 0.0
        bounds[name] = bound(fired, cpd, window or 0.0)
    result["bounds"] = bounds
    known = {k: v for k, v in bounds.items() if v["deals_per_s"] is not None}
    if known and result["deals_per_s"]:
        binding = min(known, key=lambda k: known[k]["deals_per_s"] or math.inf)
        result["binding"] = binding
        result["bound_deals_per_s"] = known[binding]["deals_per_s"]
        result["ratio"] = round(result["deals_per_s"] / known[binding]["deals_per_s"], 3)
        t_min = max(v["t_min_s"] or 0.0 for v in known.values())
        result["ratio_t_min"] = round(t_min / window, 3) if window else None
    else:
        result["binding"], result["bound_deals_per_s"], result["ratio"], result["ratio_t_min"] = None, None, None, None
    result["target"] = {"ratio": THROUGHPUT_TARGET, "ok": result["ratio"] is not None and complete
                        and result["ratio"] >= THROUGHPUT_TARGET}  # fmt: skip
    return result


def steady(cloud: Cloud, admin_url: str, rate: float, args: argparse.Namespace) -> dict[str, Any]:
    fired = max(1, round(rate * args.seconds))
    setup = prepare(cloud, admin_url, fired, args)
    try:
        seen = fire_and_wait(cloud, setup, fired / rate, args.timeout)
    finally:
        finish(setup, admin_url, args)
    result, deals = common(cloud, seen, setup, fired)
    result |= {"workload": "latency", "rate": rate, "seconds": fired / rate}
    to_target = latencies(deals, fired, "created")
    to_answer = latencies(deals, fired, "answered")
    result["latency_s"] = {f"p{round(q * 100)}": rounded(quantile(to_target, q)) for q in QUANTILES} | {
        "max": rounded(max(to_target, default=math.inf))
    }
    result["answer_latency_s"] = {f"p{round(q * 100)}": rounded(quantile(to_answer, q)) for q in QUANTILES} | {
        "max": rounded(max(to_answer, default=math.inf))
    }
    # Deals whose contact or company had to be created in the target (first deals of each) against the rest.
    for name, group in (("new_party", [d for d in deals if d["new_party"]]),
                        ("linked_party", [d for d in deals if not d["new_party"]])):  # fmt: skip
        values = latencies(group, len(group), "created")
        result[f"{name}_deals"] = len(group)
        result[f"{name}_p50_s"] = rounded(quantile(values, 0.5)) if values else None
    # Stage change -> target deal over the run: whether latency grows as the buckets fill.
    ordered = sorted(deals, key=lambda d: d["moved"])
    thirds = [ordered[i * len(ordered) // 3 : (i + 1) * len(ordered) // 3] for i in range(3)]
    result["p50_by_third_s"] = [rounded(quantile(latencies(t, len(t), "created"), 0.5)) if t else None for t in thirds]
    # Above the drain rate the portal's bucket (and b24bridge's copy of it) fills, and the batcher holds calls longer.
    result["requests_per_s"] = {
        name: round(result["portals"][name]["requests"] / result["seconds"], 2) for name in ("source", "target")
    }
    result["targets"] = {
        f"p{round(q * 100)}": {"target_s": t, "ok": met(result["latency_s"][f"p{round(q * 100)}"], t)}
        for q, t in LATENCY_TARGETS.get(rate, {}).items()
    }
    return result


def finish(setup: Setup, admin_url: str, args: argparse.Namespace) -> None:
    setup.bridge.stop()
    drop_database(admin_url, setup.database_url)
    if args.keep:
        print(f"  (kept b24bridge's data directory and log: {setup.data_dir})", flush=True)
    else:
        shutil.rmtree(setup.data_dir, ignore_errors=True)


# --- main ------------------------------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--deals", type=int, default=1000, help="deals of the throughput workload")
    parser.add_argument("--fire-seconds", type=float, default=1.0, help="the throughput workload's moves take this")
    parser.add_argument("--seconds", type=float, default=60.0, help="length of each latency workload")
    parser.add_argument("--rates", default="1,10", help="latency workloads' rates in deals/s, comma-separated")
    parser.add_argument("--only", choices=("throughput", "latency"), help="run one kind of workload only")
    parser.add_argument("--contacts", type=int, default=40, help="source contacts the deals share")
    parser.add_argument("--companies", type=int, default=10, help="source companies the deals share")
    parser.add_argument("--timeout", type=float, default=300.0, help="wait this long after the last move")
    parser.add_argument("--database-url", default=os.environ.get("B24BRIDGE_TEST_DATABASE_URL"))
    parser.add_argument("--log-level", default="ERROR", help="b24bridge's log level (INFO logs every request)")
    parser.add_argument("--keep", action="store_true", help="keep b24bridge's data directories (serve.log)")
    parser.add_argument("--json", action="store_true", help="print one JSON document instead of the report")
    parser.add_argument("--dump", type=Path, help="write every deal's timeline (per workload) to this JSON file")
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="experiments only: change a b24bridge setting (e.g. worker_concurrency=200); recorded figures use none",
    )
    args = parser.parse_args()
    args.changed = dict(item.split("=", 1) for item in args.set)
    rates = [float(r) for r in args.rates.split(",") if r.strip()]
    if any(r <= 0 for r in rates) or args.seconds <= 0 or args.deals < 1 or args.fire_seconds < 0:
        parser.error("--rates, --seconds and --deals must be positive, --fire-seconds not negative")
    if args.contacts < 1 or args.companies < 1:
        parser.error("--contacts and --companies must be at least 1")

    import b24bridge
    from b24bridge.observability import configure_logging

    configure_logging("ERROR", "json")
    admin_url, release_postgres = postgres_admin(args.database_url)
    machine = {**machine_info(), "b24bridge": str(Path(b24bridge.__file__).parent)}
    global DUMP
    DUMP = [] if args.dump else None
    work = Path(tempfile.mkdtemp(prefix="b24bench-cloud-"))
    results: list[dict[str, Any]] = []
    cloud = Cloud(work)
    try:
        workloads: list[Callable[[], dict[str, Any]]] = []
        if args.only in (None, "throughput"):
            workloads.append(lambda: throughput(cloud, admin_url, args))
        if args.only in (None, "latency"):
            workloads += [lambda rate=rate: steady(cloud, admin_url, rate, args) for rate in rates]
        for workload in workloads:
            results.append(workload())
            if not args.json:
                print("\n".join(report(results[-1])), flush=True)
    finally:
        cloud.stop()
        shutil.rmtree(work, ignore_errors=True)
        release_postgres()
    machine["loadavg_after"] = [round(v, 2) for v in os.getloadavg()]
    if args.dump and DUMP is not None:
        args.dump.write_text(json.dumps([{"workload": r["workload"], "rate": r.get("rate"), "deals": d}
                                         for r, d in zip(results, DUMP, strict=False)]))  # fmt: skip
    command = " ".join(["bench/bridge_e2e.py", *sys.argv[1:]])
    if args.json:
        json.dump({"machine": machine, "limits": {"burst": BURST, "drain_per_s": DRAIN}, "results": results},
                  sys.stdout)  # fmt: skip
        print()
    else:
        print("\n".join(paste_block(results, machine, command)))


if __name__ == "__main__":
    main()
