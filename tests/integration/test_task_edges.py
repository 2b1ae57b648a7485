"""Smaller holes, against a real redis-server and the ComfyUI fake: one blob-key grammar (a bad key is
malformed on first sight), `dlq retry` in intake's order and actually sending a dead result again,
deadlines that start when ComfyUI starts the prompt, and a cancel noticed while a task waits."""

from __future__ import annotations

import asyncio

import pytest

from backend import keys
from backend.blobs import new_blob_key, parse_blob_key
from backend.replies import LoopbackReply
from backend.services import Services
from backend.tasks import MalformedRecord, Result, Task, dead_letter_fields
from tests.support.pipeline import running_pipeline
from tests.support.senders import RecordingSender

REPLY = LoopbackReply()


@pytest.mark.parametrize(
    "key", ["blob:in:" + "A" * 32, "blob:tmp:" + "a" * 32, "blob:in:abcdefgh", "blob:out:" + "a" * 31 + "_"]
)
def test_a_task_accepts_exactly_the_blob_keys_the_store_accepts(key):
    with pytest.raises(ValueError):
        parse_blob_key(key)
    fields = Task(task_id="t" * 32, mode="preview", input=key, reply=REPLY, user="test:1").encode()
    with pytest.raises(MalformedRecord, match="input"):
        Task.decode(fields)
    good = new_blob_key("in")
    assert Task.decode({**fields, "input": good}).input == good


async def wait_for_dead(admin, count: int = 1, timeout: float = 10):
    for _ in range(int(timeout / 0.05)):
        letters = await admin.dead_letters()
        if len(letters) >= count:
            return letters
        await asyncio.sleep(0.05)
    raise AssertionError("nothing was dead-lettered")


async def test_a_task_with_a_bad_blob_key_is_dead_lettered_on_first_sight(settings, redis, comfy_fake):
    task = Task(task_id="b" * 32, mode="preview", input="blob:in:" + "A" * 32, reply=REPLY, user="test:1")
    await redis.xadd(settings.tasks_stream, task.encode())
    sender = RecordingSender()
    async with running_pipeline(settings, {"test": sender}) as services:
        [told] = await sender.wait_for_results(1)
        [letter] = await wait_for_dead(services.admin)
        assert told.status == "failed" and told.error == "malformed_task"
        assert letter.reason.startswith("malformed task") and int(letter.fields["deliveries"]) == 1
        assert comfy_fake.prompts == {}


async def test_a_dead_result_retried_is_sent_though_its_send_rounds_ran_out(settings, redis):
    result = Result(task_id="r" * 32, status="failed", reply=REPLY, error="timeout", message="Sorry")
    await redis.hset(keys.send_rounds(result.task_id), "failed", settings.max_deliveries)  # every round used
    await redis.xadd(settings.results_stream, result.encode())
    sender = RecordingSender()
    async with running_pipeline(settings, {"test": sender}) as services:
        [letter] = await wait_for_dead(services.admin)
        assert letter.reason.startswith("delivery failed too many times")
        [note] = sender.results  # the result itself was not sent; its user was told it can't be
        assert note.error == "undeliverable" and sender.attempts == 1
        assert (await services.admin.retry_dead(result.task_id)).ok
        [_, sent] = await sender.wait_for_results(2)
        assert sent.task_id == result.task_id and sent.error == "timeout"
        assert await services.admin.dead_letters() == []


async def test_a_retried_dead_task_is_queued_in_intakes_order(settings, redis, photo_bytes, comfy_fake):
    blob = new_blob_key("in")
    await redis.set(blob, photo_bytes)
    task = Task(task_id="q" * 32, mode="preview", input=blob, reply=REPLY, user="test:7")
    await redis.hset(keys.task(task.task_id), mapping={"handed_back": 2, "state": "done"})
    await redis.xadd(
        settings.dead_stream,
        dead_letter_fields(
            task.encode(),
            source=settings.tasks_stream,
            entry_id="1-0",
            reason="delivered 4 times",
            deliveries=4,
            last_error="",
        ),
    )
    async with Services.open(settings) as services:  # no worker yet: look at what the retry wrote
        assert (await services.admin.retry_dead(task.task_id)).ok
    state = await redis.hgetall(keys.task(task.task_id))
    [(entry_id, _)] = await redis.xrange(settings.tasks_stream)
    assert state[b"state"] == b"queued" and state[b"entry_id"] == entry_id and b"handed_back" not in state
    assert await redis.sismember(keys.user_active(task.user), task.task_id)
    sender = RecordingSender()
    async with running_pipeline(settings, {"test": sender}):
        [done] = await sender.wait_for_results(1)
        assert done.status == "ok"


async def test_the_deadline_excludes_the_wait_behind_prefetched_prompts(settings, photo_bytes, comfy_fake):
    settings = settings.model_copy(update={"task_timeout_s": 1.5, "user_max_active": 5})
    comfy_fake.delay_s = 0.9  # the third prompt waits 1.8 s behind the first two: longer than its timeout
    sender = RecordingSender()
    async with running_pipeline(settings, {"test": sender}) as services:
        for _ in range(3):
            await services.intake.submit(photo_bytes, mode="preview", reply=REPLY, user="test:1")
        results = await sender.wait_for_results(3, timeout=30)
        assert [r.status for r in results] == ["ok"] * 3
        assert len(comfy_fake.prompts) == 3, "no prompt timed out and ran again"
        assert not [e for e in sender.events if e.state == "retrying"]


async def test_a_cancel_is_noticed_while_the_task_waits_for_a_comfyui_slot(settings, photo_bytes, comfy_fake):
    sender = RecordingSender()
    async with running_pipeline(settings, {"test": sender}) as services:
        for _ in range(100):  # the worker has found ComfyUI healthy and made its group
            if await services.redis.exists(settings.tasks_stream):
                break
            await asyncio.sleep(0.05)
        comfy_fake.http_500 = True  # the upload fails, the instance is taken out: the task waits for one
        submitted = await services.intake.submit(photo_bytes, mode="preview", reply=REPLY, user="test:1")
        for _ in range(100):  # its first upload failed: it now waits for an instance that is down
            if ("POST", "/upload/image") in comfy_fake.requests:
                break
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.3)
        assert await services.admin.cancel(submitted.task_id, user="test:1")
        [result] = await sender.wait_for_results(1, timeout=10)
        assert result.status == "cancelled"
        assert comfy_fake.http_500, "noticed while ComfyUI was still down"
