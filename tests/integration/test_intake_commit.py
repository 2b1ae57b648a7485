"""Intake against a real redis-server: one platform event is one task, and a committed XADD is never
answered as a failure."""

from __future__ import annotations

import asyncio

from backend import intake as intake_module
from backend import keys
from backend.replies import LoopbackReply, TelegramReply
from backend.services import Services

REPLY = LoopbackReply()
USER = "test:7"


async def stream_ids(services: Services) -> list[str]:
    return [f[b"task_id"].decode() for _, f in await services.redis.xrange(services.settings.tasks_stream)]


async def test_the_same_event_twice_is_one_task_with_the_first_answer(settings, photo_bytes):
    async with Services.open(settings) as services:
        reply = TelegramReply(chat_id=5, status_message_id=1)
        first = await services.intake.submit(photo_bytes, mode="preview", reply=reply, user=USER, event_key="test:e1")
        again = await services.intake.submit(
            photo_bytes,
            mode="preview",
            reply=TelegramReply(chat_id=5, status_message_id=2),
            user=USER,
            event_key="test:e1",
        )
        assert not first.duplicate and again.duplicate
        assert again.task_id == first.task_id and again.position == first.position
        assert again.reply == reply, "the answer goes where the first delivery was answered"
        assert await stream_ids(services) == [first.task_id]
        assert await services.redis.smembers(keys.user_active(USER)) == {first.task_id.encode()}
        other = await services.intake.submit(photo_bytes, mode="preview", reply=REPLY, user=USER, event_key="test:e2")
        assert other.task_id != first.task_id and not other.duplicate
        ttl = await services.redis.ttl(keys.event_claim("test:e1"))
        assert 0 < ttl <= settings.idempotency_ttl_s


async def test_two_deliveries_at_once_race_to_one_task(settings, photo_bytes):
    async with Services.open(settings) as services:
        outcomes = await asyncio.gather(
            *[
                services.intake.submit(
                    photo_bytes,
                    mode="preview",
                    reply=TelegramReply(chat_id=5, status_message_id=n + 1),
                    user=USER,
                    event_key="test:race",
                )
                for n in range(4)
            ]
        )
        [task_id] = await stream_ids(services)
        assert {o.task_id for o in outcomes} == {task_id}
        assert sum(not o.duplicate for o in outcomes) == 1
        # The losers gave their places back and removed the blobs they had stored.
        assert await services.redis.smembers(keys.user_active(USER)) == {task_id.encode()}
        assert len([k async for k in services.redis.scan_iter("blob:in:*")]) == 1


async def test_a_failure_after_the_xadd_keeps_the_reservation_and_answers_queued(settings, photo_bytes, monkeypatch):
    async def broken(*args, **kwargs):
        raise ConnectionError("Redis went away right after the XADD")

    monkeypatch.setattr(intake_module, "estimate_wait", broken)
    async with Services.open(settings) as services:
        submitted = await services.intake.submit(photo_bytes, mode="preview", reply=REPLY, user=USER)
        assert submitted.position >= 1 and not submitted.duplicate
        assert await stream_ids(services) == [submitted.task_id]
        assert await services.redis.smembers(keys.user_active(USER)) == {submitted.task_id.encode()}
        state = await services.redis.hgetall(keys.task(submitted.task_id))
        assert state[b"state"] == b"queued" and state[b"ordinal"] == b"1" and state[b"entry_id"]


async def test_a_lost_reply_to_a_committed_xadd_is_still_queued(settings, photo_bytes):
    async with Services.open(settings) as services:
        script = services.intake._enqueue_script

        async def commits_then_times_out(*args, **kwargs):
            await script(*args, **kwargs)
            raise TimeoutError("reply lost")

        services.intake._enqueue_script = commits_then_times_out
        submitted = await services.intake.submit(photo_bytes, mode="preview", reply=REPLY, user=USER)
        assert await stream_ids(services) == [submitted.task_id]
        assert await services.redis.smembers(keys.user_active(USER)) == {submitted.task_id.encode()}


async def test_a_failed_xadd_gives_the_place_back(settings, photo_bytes):
    async with Services.open(settings) as services:

        async def refused(*args, **kwargs):
            raise ConnectionError("Redis down before the XADD")

        services.intake._enqueue_script = refused
        try:
            await services.intake.submit(photo_bytes, mode="preview", reply=REPLY, user=USER)
        except ConnectionError:
            pass
        else:
            raise AssertionError("the failure must reach the bot")
        assert await services.redis.scard(keys.user_active(USER)) == 0


async def test_a_second_delivery_is_not_refused_for_the_place_the_first_holds(settings, photo_bytes):
    settings = settings.model_copy(update={"user_max_active": 1})
    async with Services.open(settings) as services:
        intake = services.intake
        # The first delivery is mid-way: it holds its turn and the user's only place, no XADD yet.
        await services.redis.set(keys.event_turn("test:busy"), "first", px=5000)
        await services.redis.sadd(keys.user_active(USER), "f" * 32)
        try:
            await intake.check_open(USER)
        except Exception as exc:  # noqa: BLE001
            assert getattr(exc, "code", "") == "too_many_active"
        else:
            raise AssertionError("another photo is refused: the user's place is taken")
        await intake.check_open(USER, event_key="test:busy")  # the same photo again: not refused

        async def first_delivery_finishes() -> None:
            await asyncio.sleep(0.3)
            await services.redis.hset(keys.event_claim("test:busy"), mapping={"task_id": "f" * 32, "reply": "{}"})
            await services.redis.delete(keys.event_turn("test:busy"))

        finishing = asyncio.create_task(first_delivery_finishes())
        again = await intake.submit(photo_bytes, mode="preview", reply=REPLY, user=USER, event_key="test:busy")
        await finishing
        assert again.duplicate and again.task_id == "f" * 32, "it waited for the first delivery's task"
        assert await stream_ids(services) == []


async def test_an_event_whose_task_is_done_is_finished_not_queued_again(settings, photo_bytes):
    async with Services.open(settings) as services:
        first = await services.intake.submit(photo_bytes, mode="preview", reply=REPLY, user=USER, event_key="test:old")
        await services.redis.hset(keys.task(first.task_id), "state", "done")  # its result went out
        again = await services.intake.claimed("test:old")
        assert again.duplicate and again.finished and again.task_id == first.task_id
        await services.redis.delete(keys.task(first.task_id))  # long ago: its record expired meanwhile
        assert (await services.intake.claimed("test:old")).finished
        assert await stream_ids(services) == [first.task_id]
