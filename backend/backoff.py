"""Waiting before trying again: exponential backoff with jitter and a cap, the one way this project does it.

Every retry loop (Redis gone, ComfyUI down, a send that failed, a bot or ComfyUI that died) keeps a
`Backoff`, asks it for the next delay, and resets it once things work again. The jitter spreads the
retries of many processes that lost the same Redis at the same moment, so they don't all come back in step.
"""

from __future__ import annotations

import asyncio
import contextlib
import random

JITTER = 0.25  # up to a quarter of the delay is added at random


def jittered(seconds: float, spread_s: float) -> float:
    """`seconds` plus a random part of up to `spread_s`."""
    return seconds + random.uniform(0, spread_s)


class Backoff:
    """Delays that double from `first_s` up to `max_s`, each with up to `jitter` of itself added.

    :param first_s: the first delay, and the one after `reset()`
    :param max_s: no delay (before jitter) is longer than this
    :param jitter: the share of each delay added at random (0 for none)
    """

    def __init__(self, first_s: float, max_s: float, *, jitter: float = JITTER) -> None:
        self.first_s = first_s
        self.max_s = max(first_s, max_s)
        self.jitter = jitter
        self._next = first_s

    def next_delay(self) -> float:
        """The wait before the next try; the one after it is twice as long, up to the cap."""
        base = self._next
        self._next = min(base * 2, self.max_s)
        return jittered(base, base * self.jitter)

    def reset(self) -> None:
        """Things work again: the next failure starts from the shortest delay."""
        self._next = self.first_s


async def wait_event(event: asyncio.Event, timeout_s: float) -> bool:
    """Wait until `event` is set or `timeout_s` has passed; whether it is set.

    A backoff waited out on the stop event ends at once when the process stops; a wait on a wake-up
    event (a slot freed) still looks again after `timeout_s`. `asyncio.timeout`, not `wait_for`: on
    Python 3.11 `wait_for` swallows a cancellation that arrives as the event is set, and a loop around
    this wait would then never end (the task stopping it is cancelled with its chat tasks, whose
    cleanup sets that very event).
    """
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(timeout_s):
            await event.wait()
    return event.is_set()
