"""Group commit: what each caller gets back, and which requests share one write."""

from __future__ import annotations

import asyncio

import pytest

from backend.batching import GroupCommit


class Recorder:
    """A write that records each batch it was given, and answers with a per-request outcome."""

    def __init__(self, delay_s: float = 0.0):
        self.batches: list[list[int]] = []
        self.delay_s = delay_s
        self.fail_batch: Exception | None = None

    async def write(self, batch: list[int]) -> list[int | BaseException]:
        self.batches.append(batch)
        await asyncio.sleep(self.delay_s)
        if self.fail_batch is not None:
            raise self.fail_batch
        return [ValueError(f"odd {n}") if n % 2 else n * 10 for n in batch]


async def test_requests_of_one_tick_share_a_write_and_each_gets_its_own_reply():
    recorder = Recorder()
    commits = GroupCommit(recorder.write)
    outcomes = await asyncio.gather(*(commits.submit(n) for n in range(4)), return_exceptions=True)
    assert recorder.batches == [[0, 1, 2, 3]]
    assert outcomes[0] == 0 and outcomes[2] == 20
    assert [str(outcomes[1]), str(outcomes[3])] == ["odd 1", "odd 3"]


async def test_requests_made_while_a_write_is_in_flight_go_out_together_next():
    recorder = Recorder(delay_s=0.05)
    commits = GroupCommit(recorder.write)
    first = asyncio.ensure_future(commits.submit(0))
    await asyncio.sleep(0.01)  # the first write is in flight now
    later = [asyncio.ensure_future(commits.submit(n)) for n in (2, 4, 6)]
    assert await asyncio.gather(first, *later) == [0, 20, 40, 60]
    assert recorder.batches == [[0], [2, 4, 6]]


async def test_a_failed_write_reaches_every_caller_of_its_batch_and_the_next_one_still_runs():
    recorder = Recorder()
    commits = GroupCommit(recorder.write)
    recorder.fail_batch = ConnectionError("Redis away")
    outcomes = await asyncio.gather(commits.submit(0), commits.submit(2), return_exceptions=True)
    assert [type(outcome) for outcome in outcomes] == [ConnectionError, ConnectionError]
    recorder.fail_batch = None
    assert await commits.submit(4) == 40


async def test_a_lone_request_is_written_at_once():
    commits = GroupCommit(Recorder().write)
    with pytest.raises(ValueError, match="odd 1"):
        await asyncio.wait_for(commits.submit(1), timeout=1)
