"""Redelivery rules against a real redis-server: poison tasks, ownership of long tasks, DLQ retry."""

import asyncio

from backend import keys
from backend.replies import LoopbackReply
from backend.streams import ConsumerGroup
from backend.tasks import Task
from tests.support.pipeline import running_pipeline
from tests.support.senders import RecordingSender, SendPermanent

REPLY = LoopbackReply()


async def deliver_to_a_crashing_consumer(redis, settings, times: int) -> None:
    """Another consumer takes the task `times` times and dies each time without acknowledging it."""
    await redis.xgroup_create(settings.tasks_stream, settings.workers_group, id="0", mkstream=True)
    await redis.xreadgroup(settings.workers_group, "crashy-0", {settings.tasks_stream: ">"}, count=1)
    for _ in range(times - 1):
        await redis.xautoclaim(settings.tasks_stream, settings.workers_group, "crashy-0", 0, "0-0")


async def test_poison_task_is_dead_lettered_and_user_told_once(settings, redis, photo_bytes, comfy_fake):
    settings = settings.model_copy(update={"min_idle_ms": 300, "max_deliveries": 3})
    blob = "blob:in:" + "c" * 32
    await redis.set(blob, photo_bytes)
    task = Task(task_id="d" * 32, mode="preview", input=blob, reply=REPLY, user="test:5")
    await redis.xadd(settings.tasks_stream, task.encode())
    await deliver_to_a_crashing_consumer(redis, settings, times=3)
    sender = RecordingSender()
    async with running_pipeline(settings, {"test": sender}) as services:
        [result] = await sender.wait_for_results(1)
        assert result.status == "failed" and result.error == "too_many_attempts"
        for _ in range(100):  # the user is told first, then the entry moves to the DLQ
            if await services.admin.dead_letters():
                break
            await asyncio.sleep(0.05)
        [letter] = await services.admin.dead_letters()
        assert letter.task_id == task.task_id and int(letter.fields["deliveries"]) == 4
        assert comfy_fake.prompts == {}
        await asyncio.sleep(1)
        assert len(sender.results) == 1

        outcome = await services.admin.retry_dead(task.task_id)
        assert outcome.ok and outcome.task_id == task.task_id
        await sender.wait_for_results(2)
        assert sender.results[1].status == "ok"
        assert await services.admin.dead_letters() == []


async def test_long_task_keeps_its_owner(settings, redis, photo_bytes, comfy_fake):
    settings = settings.model_copy(update={"min_idle_ms": 1000})
    comfy_fake.delay_s = 4.0
    sender = RecordingSender()
    async with running_pipeline(settings, {"test": sender}) as services:
        await services.intake.submit(photo_bytes, mode="preview", reply=REPLY, user="test:1")
        thief = ConsumerGroup(
            redis,
            group=settings.workers_group,
            streams={settings.tasks_stream: "0"},
            role="thief",
            dead_stream=settings.dead_stream,
        )
        thief.consumer = "thief-0"
        stolen = []
        for _ in range(6):
            await asyncio.sleep(0.5)
            stolen += await thief.reclaim_stale(settings.min_idle_ms)
        assert stolen == [], "a worker busy with a long task must keep ownership"
        [result] = await sender.wait_for_results(1, timeout=30)
        assert result.status == "ok"


async def test_dead_result_can_be_retried_and_purged(settings, photo_bytes):
    sender = RecordingSender()
    sender.fail_with, sender.fail_times = SendPermanent("chat not found"), 1
    async with running_pipeline(settings, {"test": sender}) as services:
        submitted = await services.intake.submit(photo_bytes, mode="preview", reply=REPLY, user="test:1")
        for _ in range(100):
            if await services.admin.dead_letters():
                break
            await asyncio.sleep(0.1)
        outcome = await services.admin.retry_dead(submitted.task_id)
        assert outcome.ok
        [result] = await sender.wait_for_results(1)
        assert result.task_id == submitted.task_id and result.status == "ok"
        for _ in range(50):  # marked right after the send returns, in the notifier's next write
            if await services.redis.exists(keys.delivered(submitted.task_id)):
                break
            await asyncio.sleep(0.05)
        assert await services.redis.exists(keys.delivered(submitted.task_id))
        await services.redis.xadd(settings.dead_stream, {"reason": "x"})
        assert await services.admin.purge_dead() == 1
        assert (await services.admin.status()).dead == 0


async def test_trimming_keeps_everything_some_group_still_needs(redis, settings):
    stream = settings.tasks_stream
    group = ConsumerGroup(redis, group="g1", streams={stream: "0"}, role="trim", dead_stream=settings.dead_stream)
    group.consumer = "trim-0"
    ids = [await redis.xadd(stream, {"n": str(n)}) for n in range(600)]
    await group.ensure_groups()
    await redis.xgroup_create(stream, "g2", id=ids[399])  # a second group that has only read up to #399
    entries = await group.read_new(600, block=False)
    held = entries[250]  # g1 still holds #250 (pending); everything else it acknowledged
    for entry in entries:
        if entry is not held:
            await group.ack(entry)
    await group.trim_acknowledged(stream)
    remaining = [entry_id for entry_id, _ in await redis.xrange(stream)]
    assert held.entry_id.encode() in remaining and remaining[-1] == ids[-1]
    assert len(remaining) < 600  # whole macro-nodes before #250 went (MINID ~ trims approximately)
    await group.ack(held)
    await group.trim_acknowledged(stream)
    remaining = [entry_id for entry_id, _ in await redis.xrange(stream)]
    assert ids[399] in remaining, "g2 has not read past #399: it must stay"
