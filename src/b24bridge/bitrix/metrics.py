"""Prometheus metrics of every conversation with a portal."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

REQUESTS = Counter("b24bridge_bitrix_requests_total", "HTTP requests sent to portals", ["portal", "kind", "status"])
CALLS = Counter("b24bridge_bitrix_calls_total", "REST method calls (batched or not)", ["portal", "method", "outcome"])
ERRORS = Counter("b24bridge_bitrix_errors_total", "Errors answered by portals, by code", ["portal", "code"])
RETRIES = Counter("b24bridge_bitrix_retries_total", "Requests or calls sent again", ["portal", "reason"])
BATCH_SIZE = Histogram(
    "b24bridge_bitrix_batch_size", "Commands per HTTP request", ["portal"], buckets=(1, 2, 5, 10, 20, 30, 40, 50)
)
LIMITER_WAIT = Histogram(
    "b24bridge_bitrix_limiter_wait_seconds",
    "Time a request waited for the portal's limits",
    ["portal"],
    buckets=(0, 0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
)
OPERATING = Gauge(
    "b24bridge_bitrix_operating_seconds", "Server time used in the 10-minute window", ["portal", "method"]
)
REDIS_UNAVAILABLE = Counter(
    "b24bridge_redis_unavailable_total",
    "Redis operations that failed and were answered from this process's own state instead, by use",
    ["use"],
)
for _use in ("limiter", "refresh_lock", "dedupe"):
    REDIS_UNAVAILABLE.labels(_use)
REFRESHES = Counter("b24bridge_bitrix_token_refreshes_total", "OAuth token refreshes", ["portal", "outcome"])
REQUEST_SECONDS = Histogram(
    "b24bridge_bitrix_request_seconds", "Duration of HTTP requests to portals", ["portal", "kind"]
)
