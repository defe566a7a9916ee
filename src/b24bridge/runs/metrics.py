"""Prometheus metrics of what comes in and how runs end: calls and triggers accepted, runs finished, retried, given
up, and how long they took."""

from __future__ import annotations

from prometheus_client import Counter, Histogram

from b24bridge.observability import portal_label

KINDS = ("robot", "bridge")
# What reaches the door and may become a run: robot calls, the bridge's hooks, portal events, statuses back.
INBOUND_KINDS = ("robot", "hook", "event", "status")

INBOUND = Counter(
    "b24bridge_inbound_total",
    "Robot calls, hooks and events received, by kind, portal, route (a robot's code for robot calls) and outcome",
    ["kind", "portal", "route", "outcome"],
)
RUNS_FINISHED = Counter(
    "b24bridge_runs_finished_total", "Runs whose work ended, by kind and outcome", ["kind", "status"]
)
RUNS_DEAD = Counter("b24bridge_runs_dead_total", "Runs given up after their whole retry schedule", ["kind"])
RUN_RETRIES = Counter("b24bridge_run_retries_total", "Attempts of runs scheduled again after a failure", ["kind"])
RUN_LATENCY = Histogram(
    "b24bridge_run_latency_seconds",
    "From a run's arrival to the end of its work (a robot's result, a delivery in the target), by kind and outcome",
    ["kind", "status"],
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 300, 1800, 7200, 86400),
)

# Every family is visible (at zero) from start-up, not only after the first run.
for _kind in KINDS:
    RUNS_DEAD.labels(_kind)
    RUN_RETRIES.labels(_kind)
    for _status in ("succeeded", "failed", "uncertain"):
        RUNS_FINISHED.labels(_kind, _status)
        RUN_LATENCY.labels(_kind, _status)


def inbound(kind: str, portal: str | None, route: str | None, outcome: str) -> None:
    INBOUND.labels(kind, portal_label(portal or "unknown"), route or "", outcome).inc()
