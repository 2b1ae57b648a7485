"""The notifier against a real redis-server: one post per result across entries and processes, no
entry skipped for sharing an id with one on the other stream, and results for a platform nobody here
serves parked instead of reclaimed forever."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator

from backend import keys
from backend.admin import Admin
from backend.admin_texts import format_status
from backend.notifier import Notifier
from backend.processes import build_notifier
from backend.replies import CliReply, LoopbackReply
from backend.services import stream_names
from backend.tasks import Event, Result
from tests.support.senders import RecordingSender

REPLY = LoopbackReply()


class SlowSender(RecordingSender):
    """Takes a while per result, so two notifiers would overlap if nothing stopped them."""

    def __init__(self, delay_s: float = 0.5) -> None:
        super().__init__()
        self.delay_s = delay_s
        self.sending = 0
        self.most_at_once = 0

    async def send_result(self, result: Result) -> None:
        self.sending += 1
        self.most_at_once = max(self.most_at_once, self.sending)
        try:
            await asyncio.sleep(self.delay_s)
            await super().send_result(result)
        finally:
            self.sending -= 1


@contextlib.asynccontextmanager
async def notifiers(redis, settings, *senders) -> AsyncIterator[list[Notifier]]:
    """Notifier instances (one per sender, as separate processes would be), started in order."""
    running = []
    for sender in senders:
        notifier = build_notifier(settings, redis, {"test": sender})
        running.append((notifier, asyncio.create_task(notifier.run())))
        while not notifier.group.consumer:  # each takes the next consumer name before the next starts
            await asyncio.sleep(0.01)
    try:
        yield [n for n, _ in running]
    finally:
        for notifier, _ in running:
            notifier.stop()
        await asyncio.gather(*(task for _, task in running))


async def wait_until(predicate, timeout: float = 10.0) -> None:
    async def poll() -> None:
        while not await predicate():
            await asyncio.sleep(0.02)

    await asyncio.wait_for(poll(), timeout)


async def pending(redis, stream: str, group: str) -> int:
    return int((await redis.xpending(stream, group))["pending"])


async def test_two_entries_for_one_result_in_two_notifiers_are_posted_once(redis, settings):
    settings = settings.model_copy(update={"min_idle_ms": 60_000})
    result = Result(task_id="a" * 32, status="failed", reply=REPLY, error="timeout", message="Sorry")
    stream, group = settings.results_stream, settings.notifiers_group
    await redis.xgroup_create(stream, group, id="0", mkstream=True)
    await redis.xgroup_create(settings.events_stream, group, id="$", mkstream=True)
    # The worker re-published the stored result (a redelivered task): two entries for one task, and each
    # of two notifier processes holds one of them when it (re)starts.
    host = socket.gethostname().split(".")[0] or "host"
    for slot in range(2):
        await redis.xadd(stream, result.encode())
        await redis.xreadgroup(group, f"{host}-notifier-{slot}", {stream: ">"}, count=1)
    first, second = SlowSender(), SlowSender()
    async with notifiers(redis, settings, first, second):
        await wait_until(lambda: _none_pending(redis, stream, group))
    assert len(first.results) + len(second.results) == 1, "one post for one result"
    assert first.attempts + second.attempts == 1, "never sent by both, not even at once"
    assert await redis.exists(keys.delivered(result.task_id))
    assert not await redis.exists(keys.send_claim(result.task_id)), "the claim is released by its owner"


async def _none_pending(redis, stream: str, group: str) -> bool:
    return await pending(redis, stream, group) == 0


async def test_a_result_and_an_event_with_the_same_entry_id_are_both_handled(redis, settings):
    settings = settings.model_copy(update={"min_idle_ms": 60_000})  # a skipped entry would wait a minute
    group = settings.notifiers_group
    for stream in (settings.results_stream, settings.events_stream):
        await redis.xgroup_create(stream, group, id="0", mkstream=True)
    result = Result(task_id="b" * 32, status="failed", reply=REPLY, error="timeout", message="Sorry")
    event = Event(task_id="c" * 32, state="started", reply=REPLY)
    # Both streams hand out ids from the clock: in one millisecond they can be equal.
    await redis.xadd(settings.results_stream, result.encode(), id="1700000000000-0")
    await redis.xadd(settings.events_stream, event.encode(), id="1700000000000-0")
    sender = RecordingSender()
    async with notifiers(redis, settings, sender):
        await wait_until(lambda: _both_acknowledged(redis, settings))
    assert [r.task_id for r in sender.results] == [result.task_id]
    assert [e.task_id for e in sender.events] == [event.task_id]


async def _both_acknowledged(redis, settings) -> bool:
    group = settings.notifiers_group
    return (
        await pending(redis, settings.results_stream, group) == 0
        and await pending(redis, settings.events_stream, group) == 0
        and bool(await redis.xinfo_groups(settings.events_stream))
        and (await redis.xinfo_groups(settings.events_stream))[0]["entries-read"] == 1
    )


async def test_a_result_nobody_here_can_send_waits_parked_then_goes_out(redis, settings):
    settings = settings.model_copy(update={"min_idle_ms": 200, "max_deliveries": 2})
    result = Result(task_id="f" * 32, status="failed", reply=REPLY, error="timeout", message="Sorry")
    await redis.xadd(settings.results_stream, result.encode())
    waiting = keys.waiting_results(settings.results_stream, "test")
    without = build_notifier(settings, redis, {})  # e.g. a notifier deployed without this platform's token
    running = asyncio.create_task(without.run())
    try:
        await wait_until(lambda: _xlen_is(redis, waiting, 1))
        await asyncio.sleep(0.6)  # well past min_idle: nothing comes back to be reclaimed
        assert await pending(redis, settings.results_stream, settings.notifiers_group) == 0
        assert await redis.xlen(waiting) == 1
        status = await Admin(redis, streams=stream_names(settings)).status()  # what the operator sees
        assert status.waiting_for_sender == {"test": 1} and status.to_notify == 0
        assert "Waiting for a test notifier: 1 result (" in format_status(status, "en")
        # Nothing of the results stream is held back for it: everything acknowledged can be trimmed.
        for n in range(300):
            await redis.xadd(
                settings.results_stream,
                Result(task_id=f"{n:032x}", status="failed", reply=CliReply(), error="timeout").encode(),
            )
        await wait_until(lambda: _xlen_below(redis, settings.results_stream, 300))
    finally:
        without.stop()
        await running
    sender = RecordingSender()
    async with notifiers(redis, settings, sender):
        [delivered] = await sender.wait_for_results(1)
    assert delivered.task_id == result.task_id
    assert await redis.xlen(waiting) == 0
    assert await redis.xlen(settings.dead_stream) == 0


async def _xlen_is(redis, stream: str, length: int) -> bool:
    return await redis.xlen(stream) == length


async def _xlen_below(redis, stream: str, length: int) -> bool:
    return await redis.xlen(stream) < length
