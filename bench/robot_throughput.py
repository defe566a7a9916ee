"""Robot throughput: N robot calls fired by the sandbox (cloud limits) into b24bridge, auto-batched vs one request each.

    .venv/bin/python bench/robot_throughput.py [--runs 2000] [--fire-seconds 10] [--concurrency N]
                                               [--baseline-seconds 90] [--timeout 300]

The sandbox runs as its own process (``b24bridge sandbox``, cloud plan, limits on), and so does b24bridge
(``b24bridge serve``: API + in-process worker); this process only sets up and observes. Per phase: fresh sandbox
state and database, install, robot synced, an automation rule on a deal stage, N deals created (limits off), limits
on, then the sandbox moves the N deals into the stage evenly over ``--fire-seconds`` (``POST /_sandbox/deals/move``).
Each move starts a workflow whose robot call reaches ``POST /robots/{code}``; each run costs two REST commands
(crm.contact.add + bizproc.event.send). Timing comes from the sandbox's workflow records: started (robot call
queued) to finished (``bizproc.event.send`` received).

The baseline phase is the same workload through a client with auto-batching off: one HTTP request per run (a run's
write and its answer always travel as one chain, in one ``batch``; nothing is shared between runs). At 2 requests/s
it would need ~(N - 50)/2 s to finish, so it is stopped after ``--baseline-seconds`` and its rate measured over that
window.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from typing import Any

from _common import STAGE, Sandbox, drop_database, postgres_admin, scrape, setup_robot

BURST, DRAIN, PER_BATCH, CALLS_PER_RUN = 50, 2.0, 50, 2  # cloud plan (REFERENCE 2.1); contact.add + event.send
REQUESTS_PER_RUN_ALONE = 1  # without auto-batching a run's two commands still go as one chain, one request


def bound_seconds(runs: int, commands_per_request: int) -> float:
    """Least time for ``runs`` runs: requests allowed by t are BURST + DRAIN*t, each carrying that many commands."""
    requests = runs * CALLS_PER_RUN / commands_per_request
    return max(0.0, (requests - BURST) / DRAIN)


def fire(sandbox: Sandbox, deal_ids: list[int], seconds: float) -> None:
    """Have the sandbox move the deals into the stage evenly over ``seconds``, as a busy sales team would.

    The portal generates the load itself, so this process spends nothing on it.
    """
    sandbox.control("POST", "/_sandbox/deals/move", {"deal_ids": deal_ids, "stage_id": STAGE, "over_seconds": seconds})


def phase(name: str, sandbox: Sandbox, admin_url: str, args: argparse.Namespace, batched: bool) -> dict[str, Any]:
    import psycopg

    # The one-request-per-run baseline: the same service with the client's auto-batching off.
    tuning = {"bitrix_autobatch": "true" if batched else "false"}
    if args.concurrency is not None:  # an experiment; recorded figures use the default
        tuning["worker_concurrency"] = str(args.concurrency)
    setup = setup_robot(sandbox, admin_url, args.runs, tuning)
    public, database_url, deal_ids = setup.public, setup.database_url, setup.deal_ids
    try:
        time.sleep(2)  # let the setup's few requests drain from the bucket
        sandbox.control("POST", "/_sandbox/config", {"limits_enabled": True})
        began = time.time()
        fire(sandbox, deal_ids, args.fire_seconds)
        cap = args.timeout if batched else args.baseline_seconds
        while time.time() - began < cap:
            started = sandbox.control("GET", "/_sandbox/workflows")["total"]
            running = sandbox.control("GET", "/_sandbox/workflows?status=running")["total"]
            if started == len(deal_ids) and running == 0:
                break
            time.sleep(0.5)
        elapsed = time.time() - began
        workflows = sandbox.control("GET", "/_sandbox/workflows")["workflows"]
        with psycopg.connect(database_url) as conn:
            row = conn.execute(
                "SELECT count(*) FROM run_calls WHERE method = 'crm.contact.add' AND status = 'ok'"
            ).fetchone()
            created = int(row[0]) if row else 0
        limits = sandbox.control("GET", "/_sandbox/limits")
        sent = scrape(f"{public}/metrics")
    finally:
        setup.bridge.stop()
        drop_database(admin_url, database_url)  # everything needed was read above
    done = [w for w in workflows if w["status"] == "completed" and w["return_values"].get("contact_id")]
    first = min(w["started_at"] for w in workflows)
    last = max((w["finished_at"] for w in done), default=first)
    latencies = sorted(w["finished_at"] - w["started_at"] for w in done)
    window = (last - first) if len(done) == len(workflows) else elapsed
    return {
        "phase": name,
        "runs": len(workflows),
        "completed": len(done),
        "fired_in_s": round(max(w["started_at"] for w in workflows) - first, 2),
        "window_s": round(window, 2),
        "contacts_created": created,
        "contacts_per_s": round(created / window, 2) if window > 0 else 0.0,
        "answered_per_s": round(len(done) / window, 2) if window > 0 else 0.0,
        "p50_s": round(statistics.median(latencies), 2) if latencies else None,
        "p99_s": round(latencies[max(0, int(len(latencies) * 0.99) - 1)], 2) if latencies else None,
        "refused_503": limits["refused_requests"],
        "refused_429": limits["refused_operating"],
        "http_requests": sent["requests"],
        "commands_per_request": round(sent["commands"] / sent["requests"], 1) if sent["requests"] else None,
        "requests_by_size": {k: v for k, v in sent.items() if k.startswith("<=")},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=2000)
    parser.add_argument("--fire-seconds", type=float, default=10.0)
    parser.add_argument("--concurrency", type=int, help="worker concurrency (jobs at once) [default: the service's]")
    parser.add_argument("--baseline-seconds", type=float, default=90.0)
    parser.add_argument("--timeout", type=float, default=300.0)
    parser.add_argument("--database-url", default=os.environ.get("B24BRIDGE_TEST_DATABASE_URL"))
    args = parser.parse_args()

    from b24bridge.observability import configure_logging

    configure_logging("ERROR", "json")
    admin_url, release_postgres = postgres_admin(args.database_url)
    sandbox = Sandbox()
    try:
        batched = phase("auto-batched", sandbox, admin_url, args, batched=True)
        baseline = phase("one request per run", sandbox, admin_url, args, batched=False)
    finally:
        sandbox.stop()
        release_postgres()

    n = args.runs
    bound_batched = n / max(bound_seconds(n, PER_BATCH), args.fire_seconds)
    # The baseline is cut short: its bound is what the limits allow within the window it was measured over.
    window = baseline["window_s"] or 1.0
    bound_single = min(n, (BURST + DRAIN * window) / REQUESTS_PER_RUN_ALONE) / window
    print(f"machine: {platform.platform()}, python {platform.python_version()}, {os.cpu_count()} CPUs")
    print(f"workload: {n} robot calls fired in {args.fire_seconds:g} s, cloud limits (burst {BURST}, {DRAIN:g} req/s)")
    for result, bound, steady in (
        (batched, bound_batched, DRAIN * PER_BATCH / CALLS_PER_RUN),
        (baseline, bound_single, DRAIN / REQUESTS_PER_RUN_ALONE),
    ):
        print(json.dumps(result))
        # A run is done when its workflow has its answer (contact.add + event.send): that is what the bound counts.
        ratio = result["answered_per_s"] / bound if bound else 0.0
        print(
            f"  {result['phase']}: {result['completed']}/{result['runs']} workflows answered in {result['window_s']} s"
            f" = {result['answered_per_s']} runs/s (contacts created: {result['contacts_created']});"
            f" bound {bound:.2f} runs/s (steady state {steady:g}/s after the burst) -> {ratio:.0%} of the bound;"
            f" robot call -> event.send p50 {result['p50_s']} s, p99 {result['p99_s']} s"
        )
    if baseline["answered_per_s"]:
        speedup = batched["answered_per_s"] / baseline["answered_per_s"]
        print(f"auto-batched / one request per run (runs answered per second): {speedup:.1f}x")


if __name__ == "__main__":
    main()
