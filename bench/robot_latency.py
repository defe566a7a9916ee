"""Robot latency on b24bridge's default settings: robot call -> bizproc.event.send under cloud limits.

    .venv/bin/python bench/robot_latency.py [--seconds 60] [--rates 1,10] [--burst 300] [--only steady|burst]
                                            [--timeout 120] [--database-url URL] [--json]

The sandbox runs as its own process (``b24bridge sandbox``, cloud plan, limits on: burst 50 requests, drain
2 requests/s) and so does b24bridge (``b24bridge serve``: API + in-process worker) on its DEFAULT settings: it gets
only what it needs to connect (database URL, data directory, port, public URL, application credentials, OAuth
server, encryption key, log level and format); inherited ``B24BRIDGE_*`` variables are dropped and it runs where no
``.env`` is. Each workload gets a fresh sandbox world and a fresh database (dropped afterwards), then:

* steady: ``rate`` calls/s for ``--seconds`` - the sandbox itself moves ``rate * seconds`` deals into the robot's
  stage, move i at i/rate s (``POST /_sandbox/deals/move`` with ``over_seconds``), each move starting a workflow
  whose robot call reaches ``POST /robots/{code}``;
* burst: ``--burst`` deals moved at once (``over_seconds=0``).

Latency of a run: the sandbox's handler-call record ``at`` (taken just before it POSTs the robot call) to the
workflow's ``finished_at`` (set while the portal executes ``bizproc.event.send``); both are ``time.time()`` in the
sandbox process, so one clock, microsecond resolution. A run never answered counts as infinitely late. Requests per
run: b24bridge's own ``/metrics`` (``b24bridge_bitrix_batch_size_count``: HTTP requests to the portal), the delta
from just before the first call to the last answer, over the runs fired.

The floor. A run needs two commands, ``crm.contact.add`` then ``bizproc.event.send`` with its id; chained in one
batch (``$result[...]``) that is one request per run, and a request may carry up to 50 commands (25 runs). What the
leaky bucket then imposes on a sustained stream (it may not grow: over a long day requests average <= 2/s):
* rate <= 2 runs/s: one request per run fits the drain, so the bucket never fills and a lone call goes at once;
  floor = one round trip of such a request (measured here against the same sandbox, limits off);
* rate > 2 runs/s: requests must be shared, at most one per drain interval (0.5 s); with calls arriving every
  1/rate s a slot is taken at an arrival and the runs that came since wait for the next one: waits 0, 1/rate, ...
  up to 0.5 s - 1/rate, on average ~a quarter of a second (0.2 s at 10 runs/s: p50 0.2 s, p99 0.4 s), plus the
  round trip. Spending the 50-request burst could beat this for the first seconds only, so it is left out.
The operating-time limit (480 s per method per 10 min, 0.05 s per write) does not bind below 16 runs/s.
Burst: N runs need ceil(2N / 50) requests (12 for 300); up to 50 of them go at once, so the limits impose no wait;
what is left is the portal's own work on those requests (measured: that many 50-command batches back to back).
"""

from __future__ import annotations

import argparse
import functools
import json
import math
import os
import sys
from collections.abc import Callable
from typing import Any

from _common import Sandbox, drop_database, postgres_admin
from _latency_report import QUANTILES, report, runs_of, summary
from _latency_world import (
    BURST,
    COMMANDS_PER_RUN,
    DRAIN,
    MAX_BATCH,
    bucket_waits,
    fire_and_wait,
    operating_binds,
    prepare,
)
from _measure import machine_info, met, quantile, rounded

# From the issue "robot runs with the default settings": calls/s -> {quantile: seconds}.
STEADY_TARGETS: dict[float, dict[float, float]] = {1.0: {0.5: 0.060, 0.99: 0.150}, 10.0: {0.5: 0.350, 0.99: 0.800}}
BURST_TARGETS: dict[int, tuple[float, int]] = {300: (5.0, 40)}  # runs -> (s after the last arrival, requests)


# --- workloads -------------------------------------------------------------------------------------------------


def steady(sandbox: Sandbox, admin_url: str, rate: float, args: argparse.Namespace) -> dict[str, Any]:
    fired = max(1, round(rate * args.seconds))
    setup, round_trip, warm_up = prepare(sandbox, admin_url, fired, 1, args.changed)
    try:
        seen = fire_and_wait(sandbox, setup, fired / rate, args.timeout)
    finally:
        setup.bridge.stop()
        drop_database(admin_url, setup.database_url)
    result = {"workload": "steady", "rate": rate, "seconds": fired / rate, **summary(runs_of(seen), seen, fired)}
    result["warm_up_s"] = round(warm_up, 4)
    waits = bucket_waits(rate, fired)
    floor = {f"p{round(q * 100)}": quantile(waits, q) + round_trip for q in QUANTILES}
    result["floor_s"] = {k: rounded(v) for k, v in floor.items()}
    result["floor_round_trip_s"] = round(round_trip, 4)
    result["floor_operating_binds"] = operating_binds(rate)
    result["ratio_to_floor"] = {
        k: round(result["latency_s"][k] / v, 1) if result["latency_s"][k] is not None and v > 0 else None
        for k, v in floor.items()
    }
    result["targets"] = {
        f"p{round(q * 100)}": {"target_s": t, "ok": met(result["latency_s"][f"p{round(q * 100)}"], t)}
        for q, t in STEADY_TARGETS.get(rate, {}).items()
    }
    return result


def burst(sandbox: Sandbox, admin_url: str, args: argparse.Namespace) -> dict[str, Any]:
    fired = args.burst
    need = math.ceil(fired * COMMANDS_PER_RUN / MAX_BATCH)
    setup, round_trip, warm_up = prepare(sandbox, admin_url, fired, MAX_BATCH // COMMANDS_PER_RUN, args.changed)
    try:
        seen = fire_and_wait(sandbox, setup, 0.0, args.timeout)
    finally:
        setup.bridge.stop()
        drop_database(admin_url, setup.database_url)
    runs = runs_of(seen)
    result = {"workload": "burst", **summary(runs, seen, fired), "warm_up_s": round(warm_up, 4)}
    sent = [r["sent"] for r in runs if r["sent"] is not None]
    acked = [r["acked"] for r in runs if r["acked"] is not None]
    done = [r["answered"] for r in runs if r["answered"] is not None]
    complete = result["answered"] == fired
    if sent:
        # "Arrival": the sandbox's record is taken as it starts the POST; b24bridge may accept it later (its
        # acknowledgement is also given), so the time after the last one sent is the stricter figure.
        result["sent_over_s"] = round(max(sent) - min(sent), 3)
        result["acked_over_s"] = round(max(acked) - min(sent), 3) if acked else None
        result["all_answered_after_last_sent_s"] = round(max(done) - max(sent), 3) if complete else None
        result["all_answered_after_last_acked_s"] = (
            round(max(done) - max(acked), 3) if complete and len(acked) == fired else None
        )
        result["all_answered_after_first_sent_s"] = round(max(done) - min(sent), 3) if complete else None
    result["bound_requests"] = need
    result["bound_limit_wait_s"] = max(0.0, (need - BURST) / DRAIN)
    result["portal_work_s"] = round(need * round_trip, 3)  # ``need`` 50-command batches back to back
    result["floor_round_trip_s"] = round(round_trip, 4)
    target = BURST_TARGETS.get(fired)
    if target is not None:
        result["targets"] = {
            "answered_after_last_s": {
                "target_s": target[0],
                "ok": met(result.get("all_answered_after_last_sent_s"), target[0]),
            },
            "requests": {"target": target[1], "ok": complete and result["requests"] <= target[1]},
        }
    return result


# --- main ------------------------------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=60.0, help="length of each steady workload")
    parser.add_argument("--rates", default="1,10", help="steady rates in calls/s, comma-separated")
    parser.add_argument("--burst", type=int, default=300, help="calls fired at once")
    parser.add_argument("--only", choices=("steady", "burst"), help="run one kind of workload only")
    parser.add_argument("--timeout", type=float, default=120.0, help="wait for answers this long after the last call")
    parser.add_argument("--database-url", default=os.environ.get("B24BRIDGE_TEST_DATABASE_URL"))
    parser.add_argument("--json", action="store_true", help="print one JSON document instead of the report")
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="experiments only: change a setting (e.g. worker_concurrency=50); the recorded figures use none",
    )
    args = parser.parse_args()
    args.changed = dict(item.split("=", 1) for item in args.set)
    rates = [float(r) for r in args.rates.split(",") if r.strip()]
    if any(r <= 0 for r in rates) or args.seconds <= 0 or args.burst < 1:
        parser.error("--rates, --seconds and --burst must be positive")

    from b24bridge.observability import configure_logging

    configure_logging("ERROR", "json")
    admin_url, release_postgres = postgres_admin(args.database_url)
    machine = machine_info()
    results: list[dict[str, Any]] = []
    sandbox = Sandbox()
    try:
        workloads: list[Callable[[], dict[str, Any]]] = []
        if args.only in (None, "steady"):
            workloads += [functools.partial(steady, sandbox, admin_url, rate, args) for rate in rates]
        if args.only in (None, "burst"):
            workloads.append(functools.partial(burst, sandbox, admin_url, args))
        for workload in workloads:
            results.append(workload())
            if not args.json:
                print("\n".join(report(results[-1])), flush=True)
    finally:
        sandbox.stop()
        release_postgres()
    machine["loadavg_after"] = [round(v, 2) for v in os.getloadavg()]
    if args.json:
        json.dump(
            {"machine": machine, "limits": {"burst": BURST, "drain_per_s": DRAIN}, "results": results}, sys.stdout
        )
        print()
    else:
        print(
            f"machine: {machine['platform']}, python {machine['python']}, {machine['cpus']} CPUs;"
            f" load average before {machine['loadavg_before']}, after {machine['loadavg_after']};"
            f" b24bridge on its default settings, sandbox cloud limits (burst {BURST}, drain {DRAIN:g} requests/s)"
        )


if __name__ == "__main__":
    main()
