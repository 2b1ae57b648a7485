"""Delivery rounds against a real redis-server: a round cut short by a notifier crash is not a failed
round. Real notifier processes are killed with -9 mid-send; a result that survives more of those
than MAX_DELIVERIES is still delivered, one whose sends keep failing is dead-lettered after
MAX_DELIVERIES failed rounds, and one that keeps killing the notifier after
MAX_INTERRUPTED_DELIVERIES (its user told both times)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
from collections.abc import AsyncIterator
from pathlib import Path

from backend import keys
from backend.delivery import ACQUIRED, SendClaims
from backend.notifier import Notifier, SendRetry
from backend.processes import build_notifier
from backend.replies import LoopbackReply
from backend.tasks import Result
from tests.support.senders import RecordingSender

REPLY = LoopbackReply()
ROOT = Path(__file__).resolve().parents[2]

# A notifier process whose sender never answers: it holds the result's send claim until it is killed.
HANGING_NOTIFIER = """
import asyncio, sys
from redis.asyncio import Redis
from backend.processes import build_notifier
from backend.settings import Settings

class Hangs:
    async def start(self): pass
    async def close(self): pass
    async def send_event(self, event): pass
    async def send_result(self, result): await asyncio.sleep(3600)

async def main():
    settings = Settings(_env_file=None, redis_url=sys.argv[1], consumer_lease_s=1, block_ms=200, min_idle_ms=3000)
    await build_notifier(settings, Redis.from_url(settings.redis_url), {"test": Hangs()}).run()

asyncio.run(main())
"""


class FailsToSendPhotos(RecordingSender):
    """Every send of a finished photo fails (the platform keeps refusing it); short notes go through."""

    photo_tries = 0

    async def send_result(self, result: Result) -> None:
        if result.status == "ok":
            self.photo_tries += 1
            raise SendRetry("502 Bad Gateway")
        await super().send_result(result)


@contextlib.asynccontextmanager
async def notifier(redis, settings, sender) -> AsyncIterator[Notifier]:
    running = build_notifier(settings, redis, {"test": sender})
    task = asyncio.create_task(running.run())
    try:
        yield running
    finally:
        running.stop()
        await task


async def wait_until(predicate, timeout: float = 20.0) -> None:
    async def poll() -> None:
        while not await predicate():
            await asyncio.sleep(0.02)

    await asyncio.wait_for(poll(), timeout)


async def dead_letters(redis, settings) -> list[dict[bytes, bytes]]:
    return [fields for _, fields in await redis.xrange(settings.dead_stream)]


async def kill_a_notifier_mid_send(redis, redis_url: str, task_id: str) -> None:
    """Start a notifier process, wait until it holds the result's claim in a round of its own, kill -9 it."""
    rounds = keys.send_rounds(task_id)
    before = await redis.hget(rounds, "open")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = await asyncio.create_subprocess_exec(sys.executable, "-c", HANGING_NOTIFIER, redis_url, cwd=ROOT, env=env)
    try:

        async def its_round_is_open() -> bool:
            token = await redis.hget(rounds, "open")
            return token is not None and token != before

        await wait_until(its_round_is_open, timeout=30)
    finally:
        proc.send_signal(signal.SIGKILL)
        await proc.wait()


async def test_a_result_survives_more_notifier_crashes_than_max_deliveries(redis, redis_url, settings):
    settings = settings.model_copy(update={"consumer_lease_s": 1.0, "max_deliveries": 2})
    result = Result(task_id="k" * 32, status="failed", reply=REPLY, error="timeout", message="Sorry")
    await redis.xadd(settings.results_stream, result.encode())
    for _ in range(settings.max_deliveries + 1):
        await kill_a_notifier_mid_send(redis, redis_url, result.task_id)
    sender = RecordingSender()
    async with notifier(redis, settings, sender):
        [delivered] = await sender.wait_for_results(1)
    assert delivered.task_id == result.task_id and delivered.error == "timeout"
    assert await dead_letters(redis, settings) == []
    assert await redis.exists(keys.delivered(result.task_id))
    assert not await redis.exists(keys.send_rounds(result.task_id)), "cleaned up with the delivered mark"


async def test_a_result_whose_sends_keep_failing_is_dead_lettered_after_max_deliveries_rounds(redis, settings):
    settings = settings.model_copy(update={"min_idle_ms": 1200, "max_deliveries": 2, "send_retries": 2})
    result = Result(task_id="p" * 32, status="ok", reply=REPLY, output="blob:out:" + "a" * 32)
    await redis.xadd(settings.results_stream, result.encode())
    sender = FailsToSendPhotos()
    async with notifier(redis, settings, sender):
        await wait_until(lambda: dead_letters(redis, settings))
    [letter] = await dead_letters(redis, settings)
    assert letter[b"reason"].decode().startswith("delivery failed too many times (2 rounds")
    assert sender.photo_tries == settings.max_deliveries * settings.send_retries
    [note] = sender.results
    assert note.task_id == result.task_id and note.status == "failed" and note.error == "undeliverable"
    assert not await redis.exists(keys.delivered(result.task_id))


async def test_a_result_that_keeps_killing_the_notifier_is_dead_lettered_in_the_end(redis, settings):
    settings = settings.model_copy(update={"max_interrupted_deliveries": 3})
    result = Result(task_id="q" * 32, status="failed", reply=REPLY, error="timeout", message="Sorry")
    await redis.xadd(settings.results_stream, result.encode())
    # What each notifier that died sending it left in Redis: a round opened, no outcome, a claim that lapses.
    claims = SendClaims(redis, ttl_ms=1)
    for _ in range(settings.max_interrupted_deliveries):
        assert await claims.for_task(result.task_id).try_acquire() == ACQUIRED
        await asyncio.sleep(0.01)
    sender = RecordingSender()
    async with notifier(redis, settings, sender):
        await wait_until(lambda: dead_letters(redis, settings))
    [letter] = await dead_letters(redis, settings)
    assert letter[b"reason"].decode().startswith("the notifier died mid-send 3 times")
    [note] = sender.results
    assert note.error == "undeliverable", "its user is told once, instead of the result"
