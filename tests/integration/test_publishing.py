"""The worker's result write against a real redis-server: what one batch leaves behind."""

from __future__ import annotations

import asyncio

from backend import keys
from backend.publishing import ResultPublisher
from backend.replies import LoopbackReply
from backend.tasks import Result

MESSAGE = '照片 😀 "quoted" \\ back\x00slash\nnext line'


async def test_a_batch_writes_each_result_its_bookkeeping_and_the_acknowledgement(redis):
    await redis.xgroup_create("tasks", "workers", id="0", mkstream=True)
    entry_id = (await redis.xadd("tasks", {"task": "1"})).decode()
    await redis.xreadgroup("workers", "w-0", {"tasks": ">"})
    await redis.sadd(keys.user_active("test:1"), "a" * 32, "b" * 32)
    failed = Result("a" * 32, "failed", LoopbackReply(), error="x", message=MESSAGE, user="test:1")
    done = Result("b" * 32, "ok", LoopbackReply(), output="blob:out:" + "c" * 32, run_ms=12, user="test:1")
    publisher = ResultPublisher(redis, group="workers", results_stream="results", ttl_s=60)
    await asyncio.gather(
        publisher.publish(failed, user="test:1", stream="tasks", entry_id=entry_id),
        publisher.publish(done, user="test:1"),
    )
    assert [Result.decode(fields) for _, fields in await redis.xrange("results")] == [failed, done]
    assert Result.decode(await redis.hgetall(keys.result("a" * 32))) == failed
    assert 0 < await redis.ttl(keys.result("a" * 32)) <= 60
    assert await redis.hgetall(keys.task("a" * 32)) == {b"state": b"done", b"status": b"failed"}
    assert await redis.smembers(keys.user_active("test:1")) == set()
    assert await redis.lrange(keys.RUN_TIMES, 0, -1) == [b"12"]  # only ok results count towards the ETA
    assert [member for member, _ in await redis.zrange(keys.DONE_LOG, 0, -1, withscores=True)] == [
        b"a" * 32 + b":failed:0",
        b"b" * 32 + b":ok:12",
    ]
    assert (await redis.xpending("tasks", "workers"))["pending"] == 0


async def test_a_missing_group_still_writes_the_result(redis):
    """Redis restarted empty: nothing is pending to acknowledge, and the result must not be lost."""
    publisher = ResultPublisher(redis, group="workers", results_stream="results")
    result = Result("d" * 32, "ok", LoopbackReply(), output="blob:out:" + "c" * 32, user="test:1")
    await publisher.publish(result, user="test:1", stream="tasks", entry_id="1-1")
    assert [Result.decode(fields) for _, fields in await redis.xrange("results")] == [result]
