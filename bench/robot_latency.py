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
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from _common import STAGE, RobotSetup, Sandbox, drop_database, scrape, setup_robot

BURST, DRAIN, MAX_BATCH, COMMANDS_PER_RUN = 50, 2.0, 50, 2  # cloud plan (REFERENCE 2.1); contact.add + event.send
OPERATING_LIMIT, OPERATING_WINDOW, WRITE_COST = 480.0, 600.0, 0.05
QUANTILES = (0.5, 0.9, 0.99)
# From the issue "robot runs with the default settings": calls/s -> {quantile: seconds}.
STEADY_TARGETS: dict[float, dict[float, float]] = {1.0: {0.5: 0.060, 0.99: 0.150}, 10.0: {0.5: 0.350, 0.99: 0.800}}
BURST_TARGETS: dict[int, tuple[float, int]] = {300: (5.0, 40)}  # runs -> (s after the last arrival, requests)


# --- the floor -------------------------------------------------------------------------------------------------


def quantile(values: list[float], q: float) -> float:
    """Nearest rank: the smallest value with at least ``q`` of the values at or below it (``inf`` allowed)."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]


def bucket_waits(rate: float, runs: int) -> list[float]:
    """Least wait for a request slot of each of ``runs`` runs arriving every 1/rate s, sustained (see the module doc).

    At or below the drain rate a run's own request goes at once. Above it, slots come every 1/DRAIN s from the first
    arrival on and run i waits for the first slot at or after its arrival.
    """
    if rate <= DRAIN:
        return [0.0] * runs
    if rate / DRAIN > MAX_BATCH / COMMANDS_PER_RUN:
        return [math.inf] * runs  # more runs per slot than a batch holds: no sustained schedule exists
    # Rounded so that an arrival that falls on a slot (0.5 s = 5 x 0.1 s) is not pushed to the next by float error.
    return [math.ceil(round(i / rate * DRAIN, 9)) / DRAIN - i / rate for i in range(runs)]


def operating_binds(rate: float) -> bool:
    """Each method has OPERATING_LIMIT s of server time per window; one write per run per method costs WRITE_COST."""
    return rate * WRITE_COST * OPERATING_WINDOW > OPERATING_LIMIT


def measure_round_trip(sandbox: Sandbox, runs_per_request: int, rounds: int) -> float:
    """Median round trip of one webhook batch carrying ``runs_per_request`` runs' commands (add, then a command
    reading its result), from this process, limits off: the network and portal share of the floor."""
    cmd: dict[str, str] = {}
    for i in range(runs_per_request):
        cmd[f"a{i}"] = "crm.contact.add?fields[NAME]=Floor&fields[PHONE][0][VALUE]=+15551234567"
        cmd[f"g{i}"] = f"crm.contact.get?id=$result[a{i}]"
    took = []
    for _ in range(rounds):
        began = time.perf_counter()
        answer = sandbox.rest("batch", {"halt": 0, "cmd": cmd})
        took.append(time.perf_counter() - began)
        if answer["result"]["result_error"]:
            raise RuntimeError(f"floor probe failed: {answer['result']['result_error']}")
    return statistics.median(took)


# --- how busy the machine was ----------------------------------------------------------------------------------


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU time of a process so far (Linux /proc; None elsewhere)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def machine_ticks() -> tuple[int, int] | None:
    """(busy, total) CPU ticks of the whole machine so far, to tell how much else ran during a window."""
    try:
        values = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    except (OSError, ValueError, IndexError):
        return None
    idle = values[3] + (values[4] if len(values) > 4 else 0)
    return sum(values) - idle, sum(values)


class CpuWindow:
    def __init__(self, sandbox_pid: int, bridge_pid: int) -> None:
        self.pids = {"sandbox": sandbox_pid, "b24bridge": bridge_pid}
        self.began = time.monotonic()
        self.start = {name: cpu_seconds(pid) for name, pid in self.pids.items()}
        self.machine = machine_ticks()

    def result(self) -> dict[str, Any]:
        elapsed = time.monotonic() - self.began
        out: dict[str, Any] = {"window_s": round(elapsed, 1), "cpus": os.cpu_count()}
        for name, pid in self.pids.items():
            now, then = cpu_seconds(pid), self.start[name]
            out[f"{name}_cpu_s"] = round(now - then, 1) if now is not None and then is not None else None
        end = machine_ticks()
        if end is not None and self.machine is not None and end[1] > self.machine[1]:
            out["machine_busy"] = round((end[0] - self.machine[0]) / (end[1] - self.machine[1]), 2)
        return out


# --- one workload ----------------------------------------------------------------------------------------------


def prepare(
    sandbox: Sandbox, admin_url: str, runs: int, probe_runs: int, changed: dict[str, str]
) -> tuple[RobotSetup, float, float]:
    """Fresh world and database, b24bridge on its defaults (unless ``--set`` changed some for an experiment), the
    floor's round trip measured, one warm-up run, limits on. Returns the setup (its ``deal_ids`` the ones to fire),
    the round trip and the warm-up's latency."""
    setup = setup_robot(sandbox, admin_url, runs + 1, changed)
    try:
        round_trip = measure_round_trip(sandbox, probe_runs, rounds=15 if probe_runs == 1 else 5)
        # The first call after start-up pays one-offs (first connections; b24bridge's client still counting the
        # setup's requests in its bucket), not latency under load; with 60 runs p99 is the slowest run, so it would
        # be this one. Reported, not counted.
        warm, setup.deal_ids = setup.deal_ids[0], setup.deal_ids[1:]
        sandbox.control("POST", f"/_sandbox/deals/{warm}/stage", {"stage_id": STAGE})
        for _ in range(300):
            found = sandbox.control("GET", f"/_sandbox/workflows?document_id=DEAL_{warm}&status=completed")
            if found["total"]:
                warm_up = found["workflows"][0]["finished_at"] - found["workflows"][0]["started_at"]
                break
            time.sleep(0.1)
        else:
            raise RuntimeError("the warm-up run was not answered within 30 s")
        # b24bridge's client kept count of its setup requests (install, robot sync, warm-up) in its own copy of the
        # bucket; a partly full bucket widens its batching window, so let that drain before measuring.
        setup_requests = scrape(f"{setup.public}/metrics")["requests"]
        time.sleep(max(2.0, setup_requests / DRAIN + 1.0))
        sandbox.control("POST", "/_sandbox/config", {"limits_enabled": True})  # also empties the portal's bucket
    except BaseException:
        setup.bridge.stop()
        drop_database(admin_url, setup.database_url)
        raise
    return setup, round_trip, warm_up


def fire_and_wait(sandbox: Sandbox, setup: RobotSetup, over_seconds: float, timeout: float) -> dict[str, Any]:
    """Fire the moves, wait for every workflow to end (or ``timeout`` s after the last move), collect the records."""
    before = scrape(f"{setup.public}/metrics")
    cpu = CpuWindow(sandbox.proc.pid, setup.bridge.proc.pid)
    body = {"deal_ids": setup.deal_ids, "stage_id": STAGE, "over_seconds": over_seconds}
    sandbox.control("POST", "/_sandbox/deals/move", body)
    # Nothing to look at while the sandbox fires; polling meanwhile would only load the portal being measured.
    time.sleep(over_seconds)
    last = f"/_sandbox/workflows?document_id=DEAL_{setup.deal_ids[-1]}"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        # The cheap queries: the last deal's workflow (all fired) and the running ones (not all answered).
        if (
            sandbox.control("GET", last)["total"]
            and not sandbox.control("GET", "/_sandbox/workflows?status=running")["total"]
        ):
            break
        time.sleep(0.5)
    after = scrape(f"{setup.public}/metrics")
    fired = {f"DEAL_{deal_id}" for deal_id in setup.deal_ids}  # not the warm-up's
    workflows = [
        wf for wf in sandbox.control("GET", "/_sandbox/workflows")["workflows"] if wf["document_id"][2] in fired
    ]
    ids = {wf["id"] for wf in workflows}
    return {
        "workflows": workflows,
        "calls": [
            c
            for c in sandbox.control("GET", "/_sandbox/handler-calls?kind=robot")["calls"]
            if c.get("workflow_id") in ids
        ],
        "limits": sandbox.control("GET", "/_sandbox/limits"),
        "requests": after["requests"] - before["requests"],
        "commands": after["commands"] - before["commands"],
        "cpu": cpu.result(),
    }


def runs_of(seen: dict[str, Any]) -> list[dict[str, Any]]:
    """Per workflow: when its robot call was sent, when b24bridge acknowledged it, when the answer came (or None)."""
    calls = {c.get("workflow_id"): c for c in seen["calls"]}
    runs = []
    for wf in seen["workflows"]:
        call = calls.get(wf["id"])
        answered = wf["status"] == "completed" and bool(wf["return_values"].get("contact_id"))
        runs.append(
            {
                "started": wf["started_at"],
                "sent": call["at"] if call else None,
                "acked": call["at"] + call["duration"] if call and call.get("ok") else None,
                "ack_s": call["duration"] if call and "duration" in call else None,
                "answered": wf["finished_at"] if answered else None,
            }
        )
    return runs


def summary(runs: list[dict[str, Any]], seen: dict[str, Any], fired: int) -> dict[str, Any]:
    latencies = [
        r["answered"] - r["sent"] if r["answered"] is not None and r["sent"] is not None else math.inf for r in runs
    ]
    latencies += [math.inf] * (fired - len(runs))  # moves that never started a workflow
    dispatch = [r["sent"] - r["started"] for r in runs if r["sent"] is not None]
    acks = [r["ack_s"] for r in runs if r["ack_s"] is not None]
    requests = seen["requests"]
    return {
        "fired": fired,
        "answered": sum(1 for r in runs if r["answered"] is not None),
        "handler_call_failed": sum(1 for c in seen["calls"] if not c.get("ok")),
        "latency_s": {f"p{round(q * 100)}": _s(quantile(latencies, q)) for q in QUANTILES}
        | {"max": _s(max(latencies, default=math.inf))},
        "requests": int(requests),
        "requests_per_run": round(requests / fired, 2) if fired else None,
        "commands_per_request": round(seen["commands"] / requests, 1) if requests else None,
        "refused_503": seen["limits"]["refused_requests"],
        "refused_429": seen["limits"]["refused_operating"],
        # What the harness adds before the clock starts, and how fast b24bridge accepts a call (both diagnostics).
        "sandbox_dispatch_p99_s": _s(quantile(dispatch, 0.99)) if dispatch else None,
        "ack_s": {"p50": _s(quantile(acks, 0.5)), "p99": _s(quantile(acks, 0.99))} if acks else None,
        "cpu": seen["cpu"],
    }


def _s(value: float) -> float | None:
    return None if math.isinf(value) else round(value, 4)


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
    result["floor_s"] = {k: _s(v) for k, v in floor.items()}
    result["floor_round_trip_s"] = round(round_trip, 4)
    result["floor_operating_binds"] = operating_binds(rate)
    result["ratio_to_floor"] = {
        k: round(result["latency_s"][k] / v, 1) if result["latency_s"][k] is not None and v > 0 else None
        for k, v in floor.items()
    }
    result["targets"] = {
        f"p{round(q * 100)}": {"target_s": t, "ok": _met(result["latency_s"][f"p{round(q * 100)}"], t)}
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
                "ok": _met(result.get("all_answered_after_last_sent_s"), target[0]),
            },
            "requests": {"target": target[1], "ok": complete and result["requests"] <= target[1]},
        }
    return result


def _met(value: float | None, target: float) -> bool:
    return value is not None and value <= target


# --- output ----------------------------------------------------------------------------------------------------


def _ms(value: float | None) -> str:
    return "unanswered" if value is None else f"{value * 1000:.0f} ms" if value < 10 else f"{value:.1f} s"


def _ok(ok: bool) -> str:
    return "OK" if ok else "MISSED"


def report(result: dict[str, Any]) -> list[str]:
    lat, cpu = result["latency_s"], result["cpu"]
    common = (
        f"  requests to the portal: {result['requests']} = {result['requests_per_run']} per run"
        f" ({result['commands_per_request']} commands each); refused 503/429: "
        f"{result['refused_503']}/{result['refused_429']}"
    )
    ack = result["ack_s"] or {}
    harness = (
        f"  harness: warm-up run (not counted) {_ms(result['warm_up_s'])};"
        f" robot call sent <= {_ms(result['sandbox_dispatch_p99_s'])} (p99) after the move;"
        f" b24bridge acknowledged a call in {_ms(ack.get('p50'))} p50 / {_ms(ack.get('p99'))} p99;"
        f" failed robot calls {result['handler_call_failed']};"
        f" CPU over {cpu['window_s']} s: b24bridge {cpu.get('b24bridge_cpu_s')} s,"
        f" sandbox {cpu.get('sandbox_cpu_s')} s,"
        f" machine {cpu.get('machine_busy', 0) * 100:.0f}% busy of {cpu['cpus']} CPUs"
    )
    if result["workload"] == "steady":
        rate, floor, ratio = result["rate"], result["floor_s"], result["ratio_to_floor"]
        why = (
            f"bucket wait 0: {rate:g} run/s needs <= {rate:g} request/s <= drain {DRAIN:g}/s, the bucket never fills"
            if rate <= DRAIN
            else f"bucket wait: {rate:g} runs/s > drain {DRAIN:g}/s, one shared request every {1 / DRAIN:g} s,"
            f" waits 0-{1 / DRAIN - 1 / rate:g} s"
        )
        lines = [
            f"steady {rate:g} call/s for {result['seconds']:g} s: {result['answered']}/{result['fired']} answered;"
            f" robot call -> bizproc.event.send p50 {_ms(lat['p50'])}, p90 {_ms(lat['p90'])}, p99 {_ms(lat['p99'])}"
            f" (max {_ms(lat['max'])})",
            f"  floor from the limits: p50 {_ms(floor['p50'])}, p90 {_ms(floor['p90'])}, p99 {_ms(floor['p99'])}"
            f" = {why}, + round trip {_ms(result['floor_round_trip_s'])}"
            + (" [operating time binds]" if result["floor_operating_binds"] else "")
            + f"; measured / floor: p50 {_x(ratio['p50'])}, p90 {_x(ratio['p90'])}, p99 {_x(ratio['p99'])}",
            common,
        ]
        if result["targets"]:
            lines.append(
                "  targets: "
                + ", ".join(
                    f"{k} <= {_ms(t['target_s'])} {_ok(t['ok'])} ({_ms(lat[k])})" for k, t in result["targets"].items()
                )
            )
    else:
        lines = [
            f"burst {result['fired']} calls at once: {result['answered']}/{result['fired']} answered;"
            f" all answered {_ms(result.get('all_answered_after_last_sent_s'))} after the last call was sent"
            f" ({_ms(result.get('all_answered_after_last_acked_s'))} after b24bridge acknowledged the last,"
            f" {_ms(result.get('all_answered_after_first_sent_s'))} after the first was sent);"
            f" calls sent over {_ms(result.get('sent_over_s'))}, acknowledged over {_ms(result.get('acked_over_s'))};"
            f" per run p50 {_ms(lat['p50'])}, p99 {_ms(lat['p99'])}",
            f"  bound: >= {result['bound_requests']} requests ({result['fired']} x {COMMANDS_PER_RUN} commands /"
            f" {MAX_BATCH} per batch), limit wait {result['bound_limit_wait_s']:g} s ({result['bound_requests']} <="
            f" burst {BURST}); the portal's own work on them ~{_ms(result['portal_work_s'])}"
            f" ({result['bound_requests']} x {_ms(result['floor_round_trip_s'])} per 50-command batch)",
            common,
        ]
        targets = result.get("targets")
        if targets:
            t, r = targets["answered_after_last_s"], targets["requests"]
            lines.append(
                f"  targets: all answered <= {t['target_s']:g} s after the last arrives {_ok(t['ok'])}"
                f" ({_ms(result.get('all_answered_after_last_sent_s'))}), requests <= {r['target']} {_ok(r['ok'])}"
                f" ({result['requests']})"
            )
    return [*lines, harness]


def _x(ratio: float | None) -> str:
    return "n/a" if ratio is None else f"{ratio:g}x"


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

    from b24bridge.db import EmbeddedPostgres, libpq_url
    from b24bridge.observability import configure_logging

    configure_logging("ERROR", "json")
    embedded = None
    if args.database_url:
        admin_url = libpq_url(args.database_url)
    else:
        embedded = EmbeddedPostgres(Path(tempfile.mkdtemp(prefix="b24bench-pg-")) / "pg")
        admin_url = embedded.start()
    machine = {
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "loadavg_before": [round(v, 2) for v in os.getloadavg()],
    }
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
        if embedded is not None:
            embedded.stop()
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
