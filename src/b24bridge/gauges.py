"""What operators watch that lives in the database, sampled every few seconds into Prometheus gauges: runs waiting,
running and dead; jobs waiting and the age of the oldest; live workers; portals by status.

Every process that serves or works samples (the values are global, so any one of them can be scraped; they agree).
A failed sample (the database away) leaves the last values, sets ``b24bridge_database_up`` to 0 and is logged at
debug; ``b24bridge_gauges_sampled_timestamp_seconds`` says how old the values are.
"""

from __future__ import annotations

import asyncio
from typing import Any

from prometheus_client import Gauge
from psycopg_pool import AsyncConnectionPool

from b24bridge import __version__
from b24bridge.observability import get_logger

log = get_logger(__name__)

SAMPLE_EVERY = 5.0
# A worker whose last heartbeat is older than this is not counted alive (workers beat every 2 s).
ALIVE_WITHIN = 30

RUNS_IN_STATE = Gauge("b24bridge_runs_in_state", "Runs waiting, running, and dead (given up)", ["kind", "status"])
JOBS_WAITING = Gauge("b24bridge_jobs_waiting", "Jobs due and waiting for a worker")
JOBS_OLDEST_WAITING = Gauge("b24bridge_jobs_oldest_waiting_seconds", "How long the oldest due job has been waiting")
WORKERS_ALIVE = Gauge("b24bridge_workers_alive", "Job workers whose heartbeat is recent")
PORTALS = Gauge("b24bridge_portals", "Portals by status (active, uninstalled, auth_lost)", ["status"])
BUILD = Gauge("b24bridge_build_info", "The running version", ["version"])

_STATES = [(kind, status) for kind in ("robot", "bridge") for status in ("queued", "running", "dead")]
for _kind, _status in _STATES:
    RUNS_IN_STATE.labels(_kind, _status).set(0)
for _portal_status in ("active", "uninstalled", "auth_lost"):
    PORTALS.labels(_portal_status).set(0)
BUILD.labels(__version__).set(1)
DATABASE_UP = Gauge("b24bridge_database_up", "1 when this process's last sample of the database succeeded, else 0")
SAMPLED_AT = Gauge(
    "b24bridge_gauges_sampled_timestamp_seconds", "When the database gauges were last sampled successfully (Unix time)"
)

_RUNS = "SELECT kind, status, count(*) FROM runs WHERE status IN ('queued', 'running', 'dead') GROUP BY 1, 2"
_JOBS = """
SELECT count(*), coalesce(extract(epoch FROM now() - min(coalesce(j.scheduled_at, e.at))), 0)
  FROM procrastinate_jobs j
  LEFT JOIN LATERAL (SELECT min(at) AS at FROM procrastinate_events
                      WHERE job_id = j.id AND type = 'deferred') e ON true
 WHERE j.status = 'todo' AND (j.scheduled_at IS NULL OR j.scheduled_at <= now())
"""
_WORKERS = (
    f"SELECT count(*) FROM procrastinate_workers WHERE last_heartbeat > now() - interval '{ALIVE_WITHIN} seconds'"
)
_PORTALS = "SELECT status, count(*) FROM portals GROUP BY 1"


_workers_alive = 1


def workers_alive() -> int:
    """Live job workers at the last sample (at least 1): how many processes share each portal's limits."""
    return max(1, _workers_alive)


async def sample(pool: AsyncConnectionPool) -> None:
    async with pool.connection() as conn:
        runs: dict[tuple[Any, ...], int] = {(k, s): 0 for k, s in _STATES}
        for kind, status, count in await (await conn.execute(_RUNS)).fetchall():
            runs[(kind, status)] = count
        jobs = await (await conn.execute(_JOBS)).fetchone()
        workers = await (await conn.execute(_WORKERS)).fetchone()
        portals = {status: count for status, count in await (await conn.execute(_PORTALS)).fetchall()}
    for (kind, status), count in runs.items():
        RUNS_IN_STATE.labels(kind, status).set(count)
    if jobs is not None:
        JOBS_WAITING.set(jobs[0])
        JOBS_OLDEST_WAITING.set(float(jobs[1]))
    global _workers_alive
    _workers_alive = int(workers[0]) if workers is not None else 0
    WORKERS_ALIVE.set(_workers_alive)
    for status in ("active", "uninstalled", "auth_lost"):
        PORTALS.labels(status).set(portals.get(status, 0))
    DATABASE_UP.set(1)
    SAMPLED_AT.set_to_current_time()


async def sample_forever(pool: AsyncConnectionPool, every: float = SAMPLE_EVERY) -> None:
    while True:
        try:
            await sample(pool)
        except Exception as exc:  # the database away: keep the last values, say they are stale
            DATABASE_UP.set(0)
            log.debug("gauges.sample_failed", error=f"{type(exc).__name__}: {exc}")
        await asyncio.sleep(every)
