"""The one backoff: delays double up to the cap, jitter only adds, reset starts over, a stop ends the wait."""

import asyncio
import random

from backend.backoff import Backoff, jittered, wait_event


def test_delays_double_up_to_the_cap_with_jitter_added():
    random.seed(7)
    backoff = Backoff(1.0, 8.0)
    delays = [backoff.next_delay() for _ in range(6)]
    for delay, base in zip(delays, [1.0, 2.0, 4.0, 8.0, 8.0, 8.0]):
        assert base <= delay <= base * 1.25


def test_without_jitter_the_delays_are_exact_and_reset_starts_over():
    backoff = Backoff(0.5, 3.0, jitter=0)
    assert [backoff.next_delay() for _ in range(4)] == [0.5, 1.0, 2.0, 3.0]
    backoff.reset()
    assert backoff.next_delay() == 0.5


def test_jitter_spreads_retries_of_many_at_once():
    delays = {Backoff(1.0, 30.0).next_delay() for _ in range(20)}
    assert len(delays) > 1 and all(1.0 <= d <= 1.25 for d in delays)
    assert 2.0 <= jittered(2.0, 0.1) <= 2.1


async def test_wait_event_ends_when_the_event_is_set():
    stop = asyncio.Event()
    asyncio.get_running_loop().call_soon(stop.set)
    assert await wait_event(stop, 60.0) is True  # would hang for a minute if the stop were not heard


async def test_wait_event_times_out_unset():
    assert await wait_event(asyncio.Event(), 0.01) is False


async def test_a_cancel_that_arrives_as_the_event_is_set_still_ends_a_loop_of_waits():
    """Runner.close cancels every task at once: a chat task's cleanup sets the wake-up event that the
    consumer loop waits on. Python 3.11's wait_for then returned normally and the loop never ended."""
    event = asyncio.Event()

    async def wait_forever() -> None:
        while True:
            await wait_event(event, 10)
            event.clear()

    for yields in range(3):  # the cancel lands zero, one or two loop steps after the event is set
        looping = asyncio.create_task(wait_forever())
        for _ in range(3):
            await asyncio.sleep(0)
        event.set()
        for _ in range(yields):
            await asyncio.sleep(0)
        looping.cancel()
        done, _ = await asyncio.wait({looping}, timeout=1)
        assert looping in done and looping.cancelled(), f"the loop went on after a cancel {yields} step(s) late"
