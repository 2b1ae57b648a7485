"""Cancelling photos in the per-user backlog against a real redis-server, including the race with the
pump that queues them: a photo is either cancelled or queued (and then flagged), never both, never lost."""

from __future__ import annotations

import asyncio
import json

from backend import keys
from backend.replies import REPLY, TelegramReply
from backend.services import Services
from backend.tasks import Result

USER = "telegram:7"


def reply(status_message_id: int) -> TelegramReply:
    return TelegramReply(chat_id=7, status_message_id=status_message_id, burst=True)


async def cancelled_results(services: Services) -> list[Result]:
    entries = await services.redis.xrange(services.settings.results_stream)
    return [Result.decode(fields) for _, fields in entries]


async def test_cancel_answers_each_backlogged_photo_as_cancelled_through_the_results_stream(settings, photo_bytes):
    async with Services.open(settings) as services:
        for status in (10, 10, 11):
            await services.backlog.hold(photo_bytes, user=USER, mode="preview", reply=reply(status))
        taken, queued = await services.backlog.cancel(USER, line="telegram:7:10")
        assert (taken, queued) == (2, [])
        results = await cancelled_results(services)
        assert [r.status for r in results] == ["cancelled", "cancelled"]
        assert {r.reply.status_message_id for r in results} == {10}
        [left] = await services.redis.lrange("repairbot:backlog:" + USER, 0, -1)
        assert json.loads(left)["reply"]["status_message_id"] == 11
        assert await services.cancelling.everything_of(USER) == 1
        assert await services.redis.llen("repairbot:backlog:" + USER) == 0
        assert await services.backlog.pump() == []  # nothing left to start
        assert await services.redis.xlen(settings.tasks_stream) == 0


async def test_a_photo_the_pump_queued_first_is_flagged_not_answered_twice(settings, photo_bytes):
    async with Services.open(settings) as services:
        await services.backlog.hold(photo_bytes, user=USER, mode="preview", reply=reply(10))
        [raw] = await services.redis.lrange("repairbot:backlog:" + USER, 0, -1)
        item = json.loads(raw)
        # The pump's step before it takes the item off the list: queued under the item's event key.
        submitted = await services.intake.resubmit(
            item["input"],
            mode="preview",
            reply=REPLY.validate_python(item["reply"]),
            user=USER,
            event_key=f"backlog:{item['id']}",
        )
        assert await services.cancelling.under_status("telegram:7:10", [], owner=USER) == 1
        assert await services.redis.exists(keys.cancelled(submitted.task_id))  # the worker answers it
        assert await cancelled_results(services) == []  # not answered here as well
        assert await services.redis.llen("repairbot:backlog:" + USER) == 0
        assert await services.backlog.pump() == []  # the pump's own removal finds it gone: no second task
        assert await services.redis.xlen(settings.tasks_stream) == 1


async def test_a_photo_cancelled_first_is_not_queued_by_the_pump(settings, photo_bytes):
    async with Services.open(settings) as services:
        await services.backlog.hold(photo_bytes, user=USER, mode="preview", reply=reply(10))
        [raw] = await services.redis.lrange("repairbot:backlog:" + USER, 0, -1)
        item = json.loads(raw)
        assert await services.backlog.cancel(USER) == (1, [])
        # A pump that read the item just before the cancel now tries to queue it: it finds it answered.
        again = await services.intake.resubmit(
            item["input"],
            mode="preview",
            reply=REPLY.validate_python(item["reply"]),
            user=USER,
            event_key=f"backlog:{item['id']}",
        )
        assert again.duplicate and again.task_id == item["id"]
        assert await services.redis.xlen(settings.tasks_stream) == 0
        assert len(await cancelled_results(services)) == 1


async def test_the_refreshed_place_in_line_keeps_saying_how_many_wait_in_the_backlog(settings, photo_bytes):
    from backend.status_line import render_event
    from backend.tasks import Event
    from backend.texts import text

    one_at_a_time = settings.model_copy(update={"user_max_active": 1})  # the backlog's photos keep waiting
    async with Services.open(one_at_a_time) as services:
        status = reply(10)
        queued = await services.intake.submit(photo_bytes, mode="preview", reply=status, user=USER)
        await services.positions.watch(queued.task_id, status)
        for _ in range(2):
            await services.backlog.hold(photo_bytes, user=USER, mode="preview", reply=status)
        assert await services.positions.tick() == 1
        [(_, fields)] = await services.redis.xrange(settings.events_stream)
        event = Event.decode(fields)
        assert (event.state, event.backlogged) == ("queued", 2)
        _, sentence = render_event(event, None, None, "en")
        assert sentence.endswith(text("backlog_waiting", "en", count=2)), sentence


async def test_a_photo_started_from_the_backlog_counts_its_wait_from_when_it_was_sent(settings, photo_bytes):
    from backend.tasks import Task, now_ms

    async with Services.open(settings) as services:
        held_at = now_ms()
        await services.backlog.hold(photo_bytes, user=USER, mode="preview", reply=reply(10))
        await asyncio.sleep(0.3)
        [started] = await services.backlog.pump()
        [(_, fields)] = await services.redis.xrange(settings.tasks_stream)
        task = Task.decode(fields)
    assert task.task_id == started.task_id
    assert held_at <= task.submitted_at <= held_at + 100, "the caption's time includes the wait in the backlog"
