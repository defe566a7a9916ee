"""Prometheus metrics of the intake: how many calls share a commit, and the spool's fill and traffic."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

GROUP_SIZE = Histogram(
    "b24bridge_intake_group_size",
    "Calls stored together in one transaction (the door's group commit)",
    buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512),
)
SPOOL_BYTES = Gauge("b24bridge_spool_bytes", "Bytes in the local spool (calls kept on disk while the database is away)")
SPOOL_CAPACITY = Gauge("b24bridge_spool_capacity_bytes", "How many bytes the spool may hold (B24BRIDGE_SPOOL_MAX_MB)")
SPOOL_RECORDS = Gauge("b24bridge_spool_records", "Records this process has spooled and not yet drained")
SPOOL_APPENDED = Counter("b24bridge_spool_appended", "Records written to the spool")
SPOOL_DRAINED = Counter(
    "b24bridge_spool_drained", "Records drained from the spool into the database, by outcome", ["outcome"]
)
SPOOL_REFUSED = Counter("b24bridge_spool_refused", "Records the spool could not take (full, or the disk refused)")
SPOOL_TORN = Counter("b24bridge_spool_torn", "Spool records found cut short, corrupt or unreadable, and skipped")

for _outcome in ("accepted", "duplicate", "coalesced", "refused", "applied", "failed"):
    SPOOL_DRAINED.labels(_outcome)
