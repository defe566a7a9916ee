"""The bridge benchmark's figures: per-deal timelines, steps, portal figures and the printed report
(bench/bridge_e2e.py)."""

from __future__ import annotations

import itertools
import math
from typing import Any

from _bridge_world import DRAIN, MAX_BATCH, Cloud, Setup
from _measure import quantile, rounded

QUANTILES = (0.5, 0.9, 0.99)
THROUGHPUT_TARGET = 0.90  # measured / bound
# deals/s -> {quantile: seconds}, stage change -> target deal (issue 10).
LATENCY_TARGETS: dict[float, dict[float, float]] = {1.0: {0.5: 0.150}, 10.0: {0.5: 1.2, 0.99: 2.5}}
STEPS = ("dispatch", "accept", "queue", "read", "write", "finish", "answer")
# The source reads of a delivery (one chain): the last of them done ends the "read" step.
SOURCE_READS = ("crm.deal.get", "crm.deal.productrows.get", "crm.contact.list", "crm.company.list")


# --- per deal --------------------------------------------------------------------------------------------------


def deals_of(cloud: Cloud, seen: dict[str, Any]) -> list[dict[str, Any]]:
    """Per fired deal: its stage change, robot call, run-log times, target deal creation and workflow answer."""
    member = cloud.source.member_id
    created: dict[int, list[float]] = {}
    for deal in seen["target_deals"]:
        origin = str(deal.get("ORIGIN_ID") or "")
        if origin.startswith(f"{member}:DEAL:"):
            created.setdefault(int(origin.rsplit(":", 1)[1]), []).append(float(deal["DATE_CREATE"]))
    sent = {c["workflow_id"]: c["at"] for c in seen["calls"]}
    out = []
    for wf in seen["workflows"]:
        deal_id = int(wf["document_id"][2].removeprefix("DEAL_"))
        run = seen["runs"].get(wf["id"], {})
        calls = run.get("calls") or []
        methods = [c[0] for c in calls]
        read = max((c[1] for c in calls if c[0] in SOURCE_READS), default=None)
        answered = wf["status"] == "completed" and bool(wf["return_values"].get("target_deal_id"))
        times = created.get(deal_id, [])
        out.append(
            {
                "deal_id": deal_id,
                "moved": wf["started_at"],
                "sent": sent.get(wf["id"]),
                "accepted": run.get("created"),
                "started": run.get("started"),
                "read": read,
                "created": min(times) if times else None,
                "copies": len(times),
                "finished": run.get("finished"),
                "answered": wf["finished_at"] if answered else None,
                "attempts": run.get("attempts"),
                "new_party": any(m in ("crm.contact.add", "crm.company.add") for m in methods),
            }
        )
    return out


def step_table(deals: list[dict[str, Any]]) -> dict[str, dict[str, float | None]]:
    order = ("moved", "sent", "accepted", "started", "read", "created", "finished", "answered")
    table: dict[str, dict[str, float | None]] = {}
    for step, (a, b) in zip(STEPS, itertools.pairwise(order), strict=True):
        values = [d[b] - d[a] for d in deals if d[a] is not None and d[b] is not None]
        table[step] = {"p50": rounded(quantile(values, 0.5)) if values else None,
                       "p99": rounded(quantile(values, 0.99)) if values else None}  # fmt: skip
    return table


def latencies(deals: list[dict[str, Any]], fired: int, end: str) -> list[float]:
    values = [d[end] - d["moved"] if d[end] is not None else math.inf for d in deals]
    return values + [math.inf] * (fired - len(deals))  # moves that never started a workflow


def portal_figures(cloud: Cloud, seen: dict[str, Any], fired: int) -> dict[str, dict[str, Any]]:
    """Requests, commands and what they were, per portal, from b24bridge's /metrics (labels checked)."""
    labels = {"source": cloud.source.member_id, "target": cloud.target.domain.lower()}
    unknown = sorted(set(seen["metrics"]) - set(labels.values()))
    out: dict[str, dict[str, Any]] = {}
    for name, label in labels.items():
        m = seen["metrics"].get(label, {})
        requests, commands = m.get("requests", 0.0), m.get("commands", 0.0)
        waits = m.get("limiter_wait_seconds_count", 0.0)
        durations = m.get("request_seconds_count", 0.0)
        limits = seen["limits"][name]
        out[name] = {
            "label": label,
            "requests": int(requests),
            "commands": int(commands),
            "requests_per_deal": round(requests / fired, 3) if fired else None,
            "commands_per_deal": round(commands / fired, 3) if fired else None,
            "commands_per_request": round(commands / requests, 1) if requests else None,
            "small_requests_le10": int(m.get("sizes", {}).get("10.0", 0.0)),
            # Requests beyond what the commands needed at 50 a request: bucket slots spent on partial batches.
            "requests_beyond_full": int(requests - math.ceil(commands / MAX_BATCH)),
            "by_method_per_deal": {k: round(v / fired, 3) for k, v in sorted(m.get("methods", {}).items())},
            "limiter_wait_mean_s": round(m.get("limiter_wait_seconds_sum", 0.0) / waits, 3) if waits else None,
            "request_mean_s": round(m.get("request_seconds_sum", 0.0) / durations, 4) if durations else None,
            "retries": int(m.get("retries_total", 0.0)),
            "errors": int(m.get("errors_total", 0.0)),
            "refused_503": limits["refused_requests"],
            "refused_429": limits["refused_operating"],
        }
    if unknown:
        out["unknown_labels"] = {"labels": unknown}
    return out


def common(cloud: Cloud, seen: dict[str, Any], setup: Setup, fired: int) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    deals = deals_of(cloud, seen)
    result: dict[str, Any] = {
        "fired": fired,
        "workflows": len(deals),
        "delivered": sum(1 for d in deals if d["created"] is not None),
        "delivered_twice": sum(1 for d in deals if d["copies"] > 1),
        "answered": sum(1 for d in deals if d["answered"] is not None),
        "retried_runs": sum(1 for d in deals if (d["attempts"] or 0) > 1),
        "robot_calls_failed": sum(1 for c in seen["calls"] if not c.get("ok")),
        "timed_out": seen["timed_out"],
        "portals": portal_figures(cloud, seen, fired),
        "steps_s": step_table(deals),
        "warm_up_s": round(setup.warm_up_s, 3),
        "cpu": seen["cpu"],
        "loadavg_before_after": seen["loadavg"],
    }
    if DUMP is not None:
        DUMP.append(deals)
    return result, deals


DUMP: list[list[dict[str, Any]]] | None = None  # every workload's deals, for --dump


# --- output ----------------------------------------------------------------------------------------------------


def _ms(value: float | None) -> str:
    if value is None:
        return "n/a"
    return f"{value * 1000:.0f} ms" if value < 1 else f"{value:.3f} s" if value < 10 else f"{value:.1f} s"


def _ok(ok: bool) -> str:
    return "OK" if ok else "MISSED"


def _portal_lines(result: dict[str, Any]) -> list[str]:
    lines = []
    for name in ("source", "target"):
        p = result["portals"][name]
        methods = ", ".join(f"{k} {v:g}" for k, v in p["by_method_per_deal"].items())
        lines.append(
            f"  {name} ({p['label']}): {p['requests']} requests, {p['commands']} commands = {p['commands_per_deal']}"
            f" commands and {p['requests_per_deal']} requests per deal, {p['commands_per_request']} per request"
            f" ({p['small_requests_le10']} requests of <= 10, {p['requests_beyond_full']} beyond full batches);"
            f" mean limiter wait {_ms(p['limiter_wait_mean_s'])},"
            f" mean request {_ms(p['request_mean_s'])}; retries {p['retries']}, errors {p['errors']},"
            f" refused 503/429 {p['refused_503']}/{p['refused_429']}"
        )
        lines.append(f"    per deal: {methods}")
    if "unknown_labels" in result["portals"]:
        lines.append(f"  metrics for other portal labels: {result['portals']['unknown_labels']['labels']}")
    return lines


def _tail(result: dict[str, Any]) -> list[str]:
    steps = result["steps_s"]
    cpu = result["cpu"]
    return [
        "  steps p50/p99: " + ", ".join(f"{s} {_ms(steps[s]['p50'])}/{_ms(steps[s]['p99'])}" for s in STEPS),
        f"  check: {result['delivered']}/{result['fired']} delivered ({result['delivered_twice']} twice),"
        f" {result['answered']} answered, {result['retried_runs']} runs retried, {result['robot_calls_failed']}"
        f" robot calls failed{', TIMED OUT' if result['timed_out'] else ''}; warm-up (not counted)"
        f" {_ms(result['warm_up_s'])}",
        f"  machine: CPU over {cpu['window_s']} s: b24bridge {cpu.get('b24bridge_cpu_s')} s, sandbox"
        f" {cpu.get('sandbox_cpu_s')} s, machine {cpu.get('machine_busy', 0) * 100:.0f}% busy of {cpu['cpus']} CPUs;"
        f" load average before/after {result['loadavg_before_after'][0]}/{result['loadavg_before_after'][3]}",
    ]


def report(result: dict[str, Any]) -> list[str]:
    if result["workload"] == "throughput":
        b = result["bounds"]
        lines = [
            f"throughput: {result['fired']} deals moved over {result['fire_seconds']:g} s:"
            f" {result['deals_per_s']} deals/s (first move -> last workflow answered {_ms(result['window_s'])});"
            f" target deals created {result['created_per_s']}/s (last at {_ms(result['created_window_s'])})",
            "  bound over that window, (burst + drain x T) x 50 / commands per deal / T: "
            + "; ".join(
                f"{n} {b[n]['deals_per_s']} deals/s (T_min {b[n]['t_min_s']} s, steady {b[n]['steady_deals_per_s']}/s)"
                for n in ("source", "target")
            ),
            f"  binding: {result['binding']}; measured / bound = {result['ratio']}"
            f" (T_min / T = {result['ratio_t_min']}); target >= {THROUGHPUT_TARGET:g}"
            f" {_ok(result['target']['ok'])}",
        ]
    else:
        lat, ans = result["latency_s"], result["answer_latency_s"]
        lines = [
            f"latency {result['rate']:g} deals/s for {result['seconds']:g} s: stage change -> target deal p50"
            f" {_ms(lat['p50'])}, p90 {_ms(lat['p90'])}, p99 {_ms(lat['p99'])} (max {_ms(lat['max'])});"
            f" -> workflow answered p50 {_ms(ans['p50'])}, p99 {_ms(ans['p99'])}",
            f"  deals creating a contact/company: {result['new_party_deals']} (p50 {_ms(result['new_party_p50_s'])}),"
            f" the rest {result['linked_party_deals']} (p50 {_ms(result['linked_party_p50_s'])}); p50 by third of the"
            f" run: {' / '.join(_ms(v) for v in result['p50_by_third_s'])}; requests/s: source"
            f" {result['requests_per_s']['source']}, target {result['requests_per_s']['target']} (drain {DRAIN:g}/s"
            " each)",
        ]
        if result["targets"]:
            lines.append(
                "  targets: "
                + ", ".join(
                    f"{k} <= {_ms(t['target_s'])} {_ok(t['ok'])} ({_ms(lat[k])})" for k, t in result["targets"].items()
                )
            )
    return [*lines, *_portal_lines(result), *_tail(result)]


def paste_block(results: list[dict[str, Any]], machine: dict[str, Any], command: str) -> list[str]:
    """The figures as docs/benchmarks.md shows them."""
    lines = ["", "--- for docs/benchmarks.md ---", f"command: {command}", "",
             "| workload | figure | bound / target | result |", "|---|---|---|---|"]  # fmt: skip
    for r in results:
        s, t = r["portals"]["source"], r["portals"]["target"]
        per_deal = (
            f"source {s['commands_per_deal']} cmds / {s['requests_per_deal']} req per deal,"
            f" target {t['commands_per_deal']} / {t['requests_per_deal']}"
        )
        if r["workload"] == "throughput":
            lines.append(
                f"| throughput, {r['fired']} deals | **{r['deals_per_s']} deals/s** ({_ms(r['window_s'])}; {per_deal})"
                f" | bound {r['bound_deals_per_s']} deals/s ({r['binding']} binds); ratio **{r['ratio']}** >= 0.9"
                f" | {_ok(r['target']['ok'])} |"
            )
        else:
            lat = r["latency_s"]
            wanted = ", ".join(f"{k} <= {_ms(v['target_s'])}" for k, v in r["targets"].items()) or "-"
            ok = all(v["ok"] for v in r["targets"].values())
            lines.append(
                f"| steady {r['rate']:g} deal/s x {r['seconds']:g} s | stage change -> target deal p50"
                f" **{_ms(lat['p50'])}**, p99 **{_ms(lat['p99'])}** ({per_deal}) | {wanted}"
                f" | {_ok(ok) if r['targets'] else '-'} |"
            )
    lines.append("")
    lines.append(
        f"b24bridge from {machine['b24bridge']}; machine: {machine['platform']}, python {machine['python']},"
        f" {machine['cpus']} CPUs; load average"
        f" before {machine['loadavg_before']}, after {machine['loadavg_after']}; "
        + "; ".join(
            f"{r['workload']}{' ' + format(r['rate'], 'g') if 'rate' in r else ''}: machine"
            f" {r['cpu'].get('machine_busy', 0) * 100:.0f}% busy (b24bridge {r['cpu'].get('b24bridge_cpu_s')} s,"
            f" sandbox {r['cpu'].get('sandbox_cpu_s')} s CPU in {r['cpu']['window_s']} s)"
            for r in results
        )
    )
    return lines
