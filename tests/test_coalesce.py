"""Calls that come together share one statement; each still gets its own answer, or its own error."""

from __future__ import annotations

import asyncio

import pytest

from b24bridge.coalesce import Coalescer


class Recorded:
    """A ``together`` that doubles each number and records the groups it was given; it refuses a negative one."""

    def __init__(self) -> None:
        self.groups: list[list[int]] = []
        self.release = asyncio.Event()
        self.release.set()

    async def __call__(self, args: list[int]) -> list[int]:
        self.groups.append(list(args))
        await self.release.wait()
        if any(arg < 0 for arg in args):
            raise ValueError(f"refused: {[arg for arg in args if arg < 0]}")
        return [arg * 2 for arg in args]


async def test_calls_made_together_share_one_group_and_each_hears_its_own_answer() -> None:
    together = Recorded()
    coalescer = Coalescer(together)
    assert await asyncio.gather(*(coalescer(n) for n in range(20))) == [n * 2 for n in range(20)]
    assert together.groups == [list(range(20))]


async def test_a_lone_call_waits_for_nobody_and_calls_made_meanwhile_go_in_the_next_group() -> None:
    together = Recorded()
    together.release.clear()
    coalescer = Coalescer(together, flushers=1)
    first = asyncio.ensure_future(coalescer(1))
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    assert together.groups == [[1]]  # under way at once, alone
    later = [asyncio.ensure_future(coalescer(n)) for n in (2, 3, 4)]
    await asyncio.sleep(0)
    together.release.set()
    assert await first == 2
    assert [await call for call in later] == [4, 6, 8]
    assert together.groups == [[1], [2, 3, 4]]


async def test_a_failing_group_is_tried_one_call_at_a_time_so_one_refusal_fails_only_its_caller() -> None:
    together = Recorded()
    coalescer = Coalescer(together)
    answers = await asyncio.gather(*(coalescer(n) for n in (1, -2, 3)), return_exceptions=True)
    assert answers[0] == 2 and answers[2] == 6
    assert isinstance(answers[1], ValueError) and str(answers[1]) == "refused: [-2]"
    assert together.groups == [[1, -2, 3], [1], [-2], [3]]


async def test_a_group_holds_one_call_per_key_and_the_second_goes_in_the_group_after() -> None:
    together = Recorded()
    coalescer = Coalescer(together, distinct=lambda n: n % 10)
    assert await asyncio.gather(*(coalescer(n) for n in (1, 2, 11, 3, 21))) == [2, 4, 22, 6, 42]
    assert together.groups == [[1, 2, 3], [11], [21]]


async def test_a_call_whose_key_is_in_a_group_under_way_waits_for_that_group_to_be_done() -> None:
    together = Recorded()
    together.release.clear()
    coalescer = Coalescer(together, distinct=lambda n: n % 10, flushers=2)
    first = asyncio.ensure_future(coalescer(1))
    await asyncio.sleep(0)
    second, other = asyncio.ensure_future(coalescer(11)), asyncio.ensure_future(coalescer(2))
    for _ in range(3):
        await asyncio.sleep(0)
    assert together.groups == [[1], [2]]  # a free flusher takes key 2 at once, but not key 1's second call
    together.release.set()
    assert (await first, await second, await other) == (2, 22, 4)
    assert together.groups == [[1], [2], [11]]


async def test_a_group_is_at_most_max_group_calls() -> None:
    together = Recorded()
    coalescer = Coalescer(together, max_group=4, flushers=1)
    await asyncio.gather(*(coalescer(n) for n in range(10)))
    assert together.groups == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]


async def test_a_caller_that_stops_waiting_leaves_the_others_their_answers() -> None:
    together = Recorded()
    together.release.clear()
    coalescer = Coalescer(together)
    calls = [asyncio.ensure_future(coalescer(n)) for n in range(3)]
    await asyncio.sleep(0)
    calls[1].cancel()
    together.release.set()
    assert await calls[0] == 0 and await calls[2] == 4
    with pytest.raises(asyncio.CancelledError):
        await calls[1]


async def test_without_split_a_failing_group_fails_every_caller_with_its_error_and_is_not_tried_again() -> None:
    together = Recorded()
    coalescer = Coalescer(together, split=False)
    answers = await asyncio.gather(*(coalescer(n) for n in (1, -2, 3)), return_exceptions=True)
    assert all(isinstance(answer, ValueError) and str(answer) == "refused: [-2]" for answer in answers)
    assert together.groups == [[1, -2, 3]]


async def test_a_group_not_done_in_time_fails_its_callers_and_the_next_group_is_answered() -> None:
    together = Recorded()
    together.release.clear()
    coalescer = Coalescer(together, timeout=0.05, flushers=1)
    late = [coalescer.submit(n) for n in (1, 2)]
    with pytest.raises(TimeoutError):
        await late[0]
    with pytest.raises(TimeoutError):
        await late[1]
    after = coalescer.submit(3)
    together.release.set()  # the late group's statement lands after all; its callers already have their answer
    assert await after == 6
    await coalescer.aclose()
    assert together.groups == [[1, 2], [3]]
