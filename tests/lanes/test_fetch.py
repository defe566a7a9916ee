"""Jobs are taken by lanes (b24bridge_fetch_job, migration 0008): a flooding portal's backlog never stands before a
quiet portal's job, a lane never runs more than its slots, and within a lane procrastinate's rules hold (order, locks,
jobs scheduled for later)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import psycopg
import pytest

from b24bridge import lanes

Conn = psycopg.Connection[Any]


@pytest.fixture
def conn(make_migrated_database: Callable[[], str]) -> Iterator[Conn]:
    with psycopg.connect(make_migrated_database(), autocommit=True) as connection:
        yield connection


_next_run = iter(range(1, 10**9))


def defer(conn: Conn, portal: str, count: int = 1, *, lock: str | None = None, later: bool = False) -> list[int]:
    rows = [
        {"q": lanes.lane(portal), "t": "robots:run", "l": lock or f"run:{run_id}", "run_id": run_id}
        for run_id in (next(_next_run) for _ in range(count))
    ]
    ids = []
    for row in rows:
        cur = conn.execute(
            "INSERT INTO procrastinate_jobs (queue_name, task_name, lock, args, scheduled_at)"
            " VALUES (%s, %s, %s, jsonb_build_object('run_id', %s::bigint),"
            " CASE WHEN %s THEN now() + interval '1 hour' END)"
            " RETURNING id",
            (row["q"], row["t"], row["l"], row["run_id"], later),
        )
        ids.append(int(cur.fetchone()[0]))  # type: ignore[index]
    return ids


def fetch(conn: Conn, slots: int = 3) -> tuple[str, int] | None:
    row = conn.execute("SELECT queue_name, id FROM b24bridge_fetch_job(NULL, NULL, %s)", (slots,)).fetchone()
    return None if row is None or row[0] is None else (str(row[0]), int(row[1]))


def finish(conn: Conn, job_id: int) -> None:
    conn.execute("UPDATE procrastinate_jobs SET status = 'succeeded' WHERE id = %s", (job_id,))


def test_a_quiet_portal_is_taken_before_a_flooding_portals_backlog(conn: Conn) -> None:
    defer(conn, "flood", 500)
    [quiet] = defer(conn, "quiet")
    taken = [fetch(conn) for _ in range(4)]
    # The flood's first job (oldest), then the quiet one (no job running there), then the flood up to its slots.
    assert taken[:2] == [("p:flood", taken[0][1]), ("p:quiet", quiet)]  # type: ignore[index]
    assert [lane for lane, _ in taken[2:]] == ["p:flood", "p:flood"]  # type: ignore[misc]


def test_a_lane_never_runs_more_than_its_slots(conn: Conn) -> None:
    defer(conn, "flood", 50)
    running = [fetch(conn, slots=3) for _ in range(3)]
    assert all(job is not None and job[0] == "p:flood" for job in running)
    assert fetch(conn, slots=3) is None  # all three slots in use: the other 47 wait
    finish(conn, running[0][1])  # type: ignore[index]
    assert fetch(conn, slots=3) is not None  # a slot freed: the next one goes


def test_lanes_with_running_jobs_yield_to_idle_ones_round_robin(conn: Conn) -> None:
    for portal in ("a", "b", "c"):
        defer(conn, portal, 10)
    order = [fetch(conn, slots=10) for _ in range(9)]
    lanes_taken = [job[0] for job in order if job is not None]
    # Each lane in turn: the one with the fewest running goes first, ties by the oldest waiting job.
    assert lanes_taken == ["p:a", "p:b", "p:c"] * 3


def test_within_a_lane_locks_order_and_schedules_hold(conn: Conn) -> None:
    first, second = defer(conn, "p", 2, lock="deal:p:7")  # one deal: one at a time, in order
    [later] = defer(conn, "p", later=True)  # a retry scheduled for later
    [other] = defer(conn, "p")
    assert fetch(conn, slots=10) == ("p:p", first)
    assert fetch(conn, slots=10) == ("p:p", other)  # second waits for first; later is not due
    assert fetch(conn, slots=10) is None
    finish(conn, first)
    assert fetch(conn, slots=10) == ("p:p", second)
    assert later not in (first, second, other)


def fetch_many(conn: Conn, slots: int, count: int) -> list[tuple[str, int]]:
    rows = conn.execute("SELECT queue_name, id FROM b24bridge_fetch_jobs(NULL, NULL, %s, %s)", (slots, count))
    return [(str(lane), int(job_id)) for lane, job_id in rows.fetchall()]


def test_several_jobs_at_once_are_taken_round_robin_within_the_slots(conn: Conn) -> None:
    flood = defer(conn, "flood", 100)
    quiet = defer(conn, "quiet", 2)
    deal = defer(conn, "deal", 3, lock="deal:d:1")
    taken = fetch_many(conn, slots=3, count=10)
    # Round one: a job of each lane (oldest lane first); round two: the next of each that has one free to run.
    assert taken == [
        ("p:flood", flood[0]), ("p:quiet", quiet[0]), ("p:deal", deal[0]),
        ("p:flood", flood[1]), ("p:quiet", quiet[1]),
        ("p:flood", flood[2]),
    ]  # fmt: skip
    assert fetch_many(conn, slots=3, count=10) == []  # flood at its slots, quiet empty, the deal's next is locked


async def test_jobs_taken_and_not_started_go_back_when_the_worker_stops(database_url: str) -> None:
    import procrastinate

    with psycopg.connect(database_url, autocommit=True) as sync:
        sync.execute("DELETE FROM procrastinate_jobs")
        ids = defer(sync, "p", 5)
        connector = procrastinate.PsycopgConnector(conninfo=database_url)
        await connector.open_async()
        try:
            manager = lanes.LaneJobManager(connector, lane_slots=100, prefetch=5)
            first = await manager.fetch_job(None, None)  # type: ignore[arg-type]
            assert first is not None and first.id == ids[0]
            await manager.give_back()
        finally:
            await connector.close_async()
        states: dict[int, str] = dict(sync.execute("SELECT id, status::text FROM procrastinate_jobs").fetchall())
    assert states == {ids[0]: "doing", **dict.fromkeys(ids[1:], "todo")}
