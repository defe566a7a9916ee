"""Prometheus metrics of the run log: how runs end, and the ones given up."""

from __future__ import annotations

from prometheus_client import Counter

KINDS = ("robot", "bridge")

RUNS_FINISHED = Counter(
    "b24bridge_runs_finished_total", "Runs whose work ended, by kind and outcome", ["kind", "status"]
)
RUNS_DEAD = Counter("b24bridge_runs_dead_total", "Runs given up after their whole retry schedule", ["kind"])
RUN_RETRIES = Counter("b24bridge_run_retries_total", "Attempts of runs scheduled again after a failure", ["kind"])

# Every family is visible (at zero) from start-up, not only after the first run.
for _kind in KINDS:
    RUNS_DEAD.labels(_kind)
    RUN_RETRIES.labels(_kind)
    for _status in ("succeeded", "failed", "uncertain"):
        RUNS_FINISHED.labels(_kind, _status)
