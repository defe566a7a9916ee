"""A worker counts the jobs queued or running in each lane (LaneBacklog): what tells the Bitrix24 client that a
portal has calls coming, so that its requests wait to be full."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable

import procrastinate
import psycopg
from procrastinate.jobs import Status

from b24bridge import lanes
from b24bridge.bitrix import BatchSettings
from tests.lanes.test_fetch import defer


@contextlib.asynccontextmanager
async def _manager(url: str, backlog: lanes.LaneBacklog) -> AsyncIterator[lanes.LaneJobManager]:
    """A worker's job manager on ``url`` (100 slots a lane, 6 jobs a fetch) counting into ``backlog``."""
    connector = procrastinate.PsycopgConnector(conninfo=url)
    await connector.open_async()
    try:
        yield lanes.LaneJobManager(connector, lane_slots=100, prefetch=6, backlog=backlog)
    finally:
        await connector.close_async()


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def past_arrivals(self) -> None:
        """Past the span in which jobs just taken stand for more on their way: what is left is the count."""
        self.now += lanes.ARRIVAL_SPAN + 0.01


async def test_a_worker_counts_each_lanes_jobs_queued_and_running(make_migrated_database: Callable[[], str]) -> None:
    url = make_migrated_database()
    clock = Clock()
    backlog = lanes.LaneBacklog(clock)
    with psycopg.connect(url, autocommit=True) as sync:
        defer(sync, "flood", 40)
        defer(sync, "flood", 5, later=True)  # retries due in an hour: not coming now
        defer(sync, "quiet", 1)
        defer(sync, "huge", 120)
        async with _manager(url, backlog) as manager:
            first = await manager.fetch_job(None, None)  # type: ignore[arg-type]
            assert first is not None and first.queue == "p:flood"  # the oldest lane's oldest job
            await manager.counted()  # counted beside the fetch, not in its way
            doing: dict[str, int] = dict(
                sync.execute("SELECT queue_name, count(*) FROM procrastinate_jobs WHERE status = 'doing' GROUP BY 1")
            )
            assert doing["p:flood"] >= 1  # taken jobs are running: still the lane's, and counted
            clock.past_arrivals()
            assert backlog.of("flood") == 40
            assert backlog.of("quiet") == 1
            assert backlog.of("huge") == 100  # no more than its slots let run: the rest make no call soon
            assert backlog.of("nobody") == 0

            # A job that ends here is one less at once, without waiting for the next count.
            await manager.finish_job(first, Status.SUCCEEDED, delete_job=False)
            assert backlog.of("flood") == 39
    clock.now += lanes.BACKLOG_STALE + 1
    assert backlog.of("flood") == 0  # nobody has counted for a while: nothing is known


async def test_jobs_a_worker_takes_count_at_once_before_any_count_of_their_lane_lands(
    make_migrated_database: Callable[[], str],
) -> None:
    """A flood's first jobs make their calls before the first count that sees them lands: without this they went
    out a few at a time (5 requests of 1 to 6 commands in the flood's first 0.3 s, docs/benchmarks.md)."""
    url = make_migrated_database()
    clock = Clock()
    backlog = lanes.LaneBacklog(clock)
    with psycopg.connect(url, autocommit=True) as sync:
        defer(sync, "flood", 40)
    async with _manager(url, backlog) as manager:
        assert await manager.fetch_job(None, None) is not None  # type: ignore[arg-type]
        clock.past_arrivals()
        assert backlog.of("flood") == 6  # the count beside the fetch has not landed: the jobs taken are known
        await manager.counted()
        assert backlog.of("flood") == 40  # and the count, once it lands, knows the rest
        assert await manager.fetch_job(None, None) is not None  # type: ignore[arg-type]
        clock.past_arrivals()
        assert backlog.of("flood") == 40  # taken from what the count saw waiting: not counted twice


async def test_a_lane_no_count_has_seen_is_counted_at_once_after_its_first_jobs_are_taken(
    make_migrated_database: Callable[[], str],
) -> None:
    """A count just landed (a quiet portal's job was taken): the flood's first fetch does not wait the usual pause
    before the next count, so its requests are held full from its first (82-83 requests for 80 full ones in the
    bridge probes without this, 80 with it)."""
    url = make_migrated_database()
    clock = Clock()  # still: no pause between counts ever passes
    backlog = lanes.LaneBacklog(clock)
    with psycopg.connect(url, autocommit=True) as sync:
        defer(sync, "quiet", 1)
        async with _manager(url, backlog) as manager:
            assert await manager.fetch_job(None, None) is not None  # type: ignore[arg-type]
            await manager.counted()
            defer(sync, "flood", 40)
            assert await manager.fetch_job(None, None) is not None  # type: ignore[arg-type]
            await manager.counted()
            clock.past_arrivals()  # after the count: the still clock decided it
            assert backlog.of("flood") == 40  # counted now, not only the 6 taken


def test_a_quiet_lanes_lone_job_does_not_ask_for_a_count_a_floods_first_jobs_do() -> None:
    clock = Clock()
    backlog = lanes.LaneBacklog(clock)
    assert backlog.taken(["p:quiet"]) is False  # one job of a lane no count has seen: a count each would be constant
    assert backlog.taken(["p:flood", "p:flood", "p:quiet"]) is True
    assert backlog.taken(["p:flood", "p:flood"]) is False  # asked already: the count is on its way
    clock.past_arrivals()
    assert (backlog.of("quiet"), backlog.of("flood")) == (2, 4)


def test_jobs_still_arriving_stand_for_more_coming_and_are_forgotten_a_span_after_they_stop() -> None:
    """A flood that reaches the door over seconds is taken as it comes: no count shows jobs waiting, and each job
    taken has its call in the batcher already. Without this its first requests went with what had come (8, 8 and
    34 commands in the bridge flood's first 0.4 s, docs/benchmarks.md)."""
    clock = Clock()
    backlog = lanes.LaneBacklog(clock)
    threshold = BatchSettings().backlog_threshold
    assert lanes.ARRIVALS_MIN <= 8
    backlog.taken(["p:flood"] * 8)
    assert backlog.of("flood") == 16  # 8 running, and 8 taken in the last span: as many on their way
    clock.now += lanes.ARRIVAL_SPAN / 2
    backlog.taken(["p:flood"] * 8)
    assert backlog.of("flood") == 32
    clock.now += lanes.ARRIVAL_SPAN * 0.75  # the first 8 were taken longer ago than the span
    assert backlog.of("flood") == 24
    clock.now += lanes.ARRIVAL_SPAN  # they stopped coming: the 16 running are all, and their calls go
    assert backlog.of("flood") == 16
    backlog.taken(["p:quiet"] * 3)  # a workflow started on three deals: not a flood, its calls go as they come
    assert backlog.of("quiet") == 3 < threshold
    clock.now += 1.0
    backlog.taken(["p:quiet"])  # and a job a second after it
    assert backlog.of("quiet") == 4 < threshold
