"""The robot latency benchmark's figures: per-run timelines, a workload's summary and the printed report
(bench/robot_latency.py)."""

from __future__ import annotations

import math
from typing import Any

from _latency_world import BURST, COMMANDS_PER_RUN, DRAIN, MAX_BATCH
from _measure import quantile, rounded

QUANTILES = (0.5, 0.9, 0.99)


# --- figures ---------------------------------------------------------------------------------------------------


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
        "latency_s": {f"p{round(q * 100)}": rounded(quantile(latencies, q)) for q in QUANTILES}
        | {"max": rounded(max(latencies, default=math.inf))},
        "requests": int(requests),
        "requests_per_run": round(requests / fired, 2) if fired else None,
        "commands_per_request": round(seen["commands"] / requests, 1) if requests else None,
        "refused_503": seen["limits"]["refused_requests"],
        "refused_429": seen["limits"]["refused_operating"],
        # What the harness adds before the clock starts, and how fast b24bridge accepts a call (both diagnostics).
        "sandbox_dispatch_p99_s": rounded(quantile(dispatch, 0.99)) if dispatch else None,
        "ack_s": {"p50": rounded(quantile(acks, 0.5)), "p99": rounded(quantile(acks, 0.99))} if acks else None,
        "cpu": seen["cpu"],
    }


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
