"""The bot's intake side, real PTB polling the Bot API fake, real Redis: what users see when sending."""

from __future__ import annotations

import json
from typing import Any

from backend import keys
from backend.services import Services
from backend.texts import text
from bots.telegram.app import build_application, running
from bots.telegram.keyboards import parse
from bots.telegram.ratelimit import FloodAwareRateLimiter

MB = 1024 * 1024


async def queued_tasks(services) -> list[dict]:
    entries = await services.redis.xrange(services.settings.tasks_stream)
    return [{k.decode(): v.decode() for k, v in fields.items()} for _, fields in entries]


def markup_data(call) -> list[str]:
    rows = call.params["reply_markup"]["inline_keyboard"]
    return [button["callback_data"] for row in rows for button in row]


async def test_photo_gets_a_status_then_queued_with_cancel(bot, user, tg_fake, photo_bytes):
    message = await user.send_photo(photo_bytes)
    await user.wait_text("Queued — #1 in line")

    status_sent = tg_fake.calls_to("sendMessage")[0]
    assert status_sent["text"] == text("received", "en")
    assert status_sent["reply_parameters"]["message_id"] == message["message_id"]
    assert tg_fake.calls_to("getFile")[0]["file_id"] == message["photo"][0]["file_id"]

    edit = tg_fake.calls_to("editMessageText")[-1]
    [cancel] = markup_data(edit)
    assert len(cancel.encode()) <= 64
    [task] = await queued_tasks(bot)
    assert parse(cancel).task_id == task["task_id"]
    reply = json.loads(task["reply"])
    assert reply["status_message_id"] == edit["message_id"] == status_sent.result["message_id"]
    assert reply["chat_id"] == user.id and reply["message_id"] == message["message_id"] and reply["lang"] == "en"
    assert task["mode"] == "person" and task["user"] == f"telegram:{user.id}"


async def test_image_document_is_queued(bot, user, tg_fake, photo_bytes):
    await user.send_document(photo_bytes, mime="image/jpeg")
    await user.wait_text("Queued — #1")
    assert len(await queued_tasks(bot)) == 1


async def test_caption_and_mode_command_choose_the_mode(bot, user, photo_bytes):
    await user.send_photo(photo_bytes, caption="老照片 建筑")
    await user.wait_text("Queued — #1")
    await user.command("/mode building")
    await user.wait_text(text("mode_set", "en", mode="building"))
    await user.send_photo(photo_bytes)
    await user.wait_text("Queued — #2")
    await user.send_photo(photo_bytes, caption="portrait of grandma")
    await user.wait_text("Queued — #3")
    assert [t["mode"] for t in await queued_tasks(bot)] == ["building", "building", "person"]
    await user.command("/mode sideways")
    await user.wait_text(text("unknown_mode", "en", modes="person, building"))
    answer = user.fake.calls_to("sendMessage")[-1]
    assert text("mode_usage", "en", mode="building", modes="person, building") in answer["text"]
    buttons = [b["callback_data"] for row in answer["reply_markup"]["inline_keyboard"] for b in row]
    assert buttons == ["m:person", "m:building"]  # the manifest's choosable modes; preview is not offered


async def test_not_an_image_is_refused(bot, user, tg_fake):
    await user.send_document(b"just some notes", mime="text/plain", name="notes.txt")
    await user.wait_text(text("not_an_image", "en"))
    assert not tg_fake.calls_to("getFile")
    await user.send_document(b"not really a jpeg", mime="image/jpeg")
    await tg_fake.wait_for(lambda: user.texts().count(text("not_an_image", "en")) == 2)
    assert await queued_tasks(bot) == []


async def test_too_large_is_refused_before_get_file(bot, user, tg_fake, photo_bytes):
    await user.send_document(photo_bytes, file_size=25 * MB)
    await user.wait_text(text("too_large", "en", max_mb=20))
    assert not tg_fake.calls_to("getFile")


async def test_undeclared_size_over_the_bot_api_limit_is_refused_when_get_file_says_so(bot, user, tg_fake, photo_bytes):
    await user.send_document(photo_bytes, file_size=25 * MB, size_declared=False)
    await user.wait_text(text("too_large", "en", max_mb=20))
    [get_file] = tg_fake.calls_to("getFile")
    assert get_file.result is None  # refused: "file is too big"
    assert text("error_generic", "en") not in user.texts()


async def test_over_our_own_size_limit_is_refused_before_get_file(start_bot, user, tg_fake, photo_bytes):
    async with start_bot(max_image_bytes=5 * MB):
        await user.send_photo(photo_bytes, file_size=6 * MB)
        await user.wait_text(text("too_large", "en", max_mb=5))
    assert not tg_fake.calls_to("getFile")


async def test_too_many_pixels_is_refused(start_bot, user, photo_bytes):
    async with start_bot(max_image_pixels=100_000, max_image_pixels_ceiling=150_000) as (services, _):
        await user.send_photo(photo_bytes)  # 512×512: over the limit and past the ceiling, so not shrunk
        await user.wait_text(text("too_many_pixels_ceiling", "en", width=512, height=512, mp=0.3, max_mp=1))
        assert await queued_tasks(services) == []


async def test_rate_limited(start_bot, user, photo_bytes):
    async with start_bot(user_max_per_hour=1):
        await user.send_photo(photo_bytes)
        await user.wait_text("Queued — #1")
        await user.send_photo(photo_bytes)
        await user.wait_text(text("rate_limited", "en", limit=1))


async def test_too_many_active(start_bot, user, photo_bytes):
    async with start_bot(user_max_active=1, user_backlog=0):
        await user.send_photo(photo_bytes)
        await user.wait_text("Queued — #1")
        await user.send_photo(photo_bytes)
        await user.wait_text(text("too_many_active", "en", limit=1))


async def test_over_the_active_limit_a_photo_waits_in_the_backlog(start_bot, user, photo_bytes):
    async with start_bot(user_max_active=1, user_backlog=2) as (services, _):
        await user.send_photo(photo_bytes)
        await user.wait_text("Queued — #1")
        await user.send_photo(photo_bytes)
        await user.wait_text(text("backlog_only", "en", count=1))
        assert len(await queued_tasks(services)) == 1  # queued by itself once the first is done


async def test_queue_full(start_bot, user, admin, photo_bytes):
    async with start_bot(queue_cap=1):
        await admin.send_photo(photo_bytes)
        await admin.wait_text("Queued — #1")
        await user.send_photo(photo_bytes)
        await user.wait_text(text("queue_full", "en"))


async def test_paused(bot, user, photo_bytes):
    await bot.admin.pause()
    await user.send_photo(photo_bytes)
    await user.wait_text(text("paused", "en"))


async def test_admins_are_exempt_from_user_limits(start_bot, admin, photo_bytes):
    async with start_bot(user_max_active=0) as (services, _):
        await admin.send_photo(photo_bytes)
        await admin.wait_text("Queued — #1")
        assert len(await queued_tasks(services)) == 1


async def test_album_is_one_status_and_one_task_per_photo(bot, user, tg_fake, photo_bytes):
    for _ in range(3):
        await user.send_photo(photo_bytes, media_group_id="album-1")
    await user.wait_text(text("queued_album", "en", count=3, position=1, eta=30)[:18])
    received = [t for t in user.texts() if t == text("received_many", "en", count=3)]
    assert len(received) == 1
    tasks = await queued_tasks(bot)
    replies = [json.loads(t["reply"]) for t in tasks]
    assert len(tasks) == 3
    assert len({r["status_message_id"] for r in replies}) == 1
    assert {r["album"] for r in replies} == {"album-1"}
    assert len({r["message_id"] for r in replies}) == 3
    [cancel_all] = markup_data(tg_fake.calls_to("editMessageText")[-1])
    await user.press(cancel_all, replies[0]["status_message_id"])
    answer = await tg_fake.wait_call("answerCallbackQuery")
    assert answer[0]["text"] == text("cancelled_count", "en", count=3)
    for task in tasks:
        assert await bot.redis.exists(keys.cancelled(task["task_id"]))


async def test_the_album_window_is_a_job_on_the_job_queue(tg_settings, tg_fake, user, photo_bytes):
    """The album's photos wait on PTB's JobQueue, not in a sleeping handler: while the window is open
    one job is scheduled and no update is being handled; when it closes, one status for both. A bot
    that stops while a window is open queues those photos on the way out (they were already taken
    from Telegram), rather than dropping them with the JobQueue's schedule."""
    settings = tg_settings.model_copy(update={"user_max_active": 4})  # all four photos run at once
    services = Services.create(settings)
    app = build_application(
        settings, services, rate_limiter=FloodAwareRateLimiter(overall_max_rate=0, group_max_rate=0)
    )

    async def gathering(album: str) -> Any:
        await user.send_photo(photo_bytes, media_group_id=album)
        [job] = await tg_fake.wait_for(lambda: app.job_queue.get_jobs_by_name(f"album:{user.id}:{album}"))
        await user.send_photo(photo_bytes, media_group_id=album)
        await tg_fake.wait_for(lambda: len(job.data.messages) == 2)  # the job carries the group
        return job

    try:
        async with running(app, settings):
            job = await gathering("album-3")
            assert app.update_processor.current_concurrent_updates == 0  # both handlers have returned
            assert not user.texts()  # still gathering
            await user.wait_text("Queued 2 photos")
            assert not app.job_queue.get_jobs_by_name(job.name)
            await gathering("album-4")  # and the bot stops before this window closes
        assert len(await queued_tasks(services)) == 4
        assert user.texts().count(text("received_many", "en", count=2)) == 2
    finally:
        await services.close()


async def test_album_over_the_active_limit_queues_what_fits_and_says_why_not_the_rest(start_bot, user, photo_bytes):
    async with start_bot(user_max_active=2, user_backlog=0) as (services, _):
        for _ in range(3):
            await user.send_photo(photo_bytes, media_group_id="album-2")
        sentence = text("backlog_full", "en", taken=2, sent=3, count=1)
        assert sentence == "I took 2 of your 3 photos; please send the other one again once these are done."
        await user.wait_text(sentence)
        await user.wait_text("Queued 2 photos")
        assert len(await queued_tasks(services)) == 2
        assert user.texts().count(sentence) == 1


async def test_cancel_button_and_cancel_command(bot, user, tg_fake, photo_bytes):
    await user.send_photo(photo_bytes)
    await user.wait_text("Queued — #1")
    edit = tg_fake.calls_to("editMessageText")[-1]
    [cancel] = markup_data(edit)
    await user.press(cancel, edit["message_id"])
    [answer] = await tg_fake.wait_call("answerCallbackQuery")
    assert answer["text"] == text("cancelled_count", "en", count=1)
    [task] = await queued_tasks(bot)
    assert await bot.redis.exists(keys.cancelled(task["task_id"]))

    await user.send_photo(photo_bytes)
    await user.wait_text("Queued — #2")
    await user.command("/cancel")
    await user.wait_text(text("cancelled_count", "en", count=2))


async def test_cancel_with_nothing_waiting(bot, user):
    await user.command("/cancel")
    await user.wait_text(text("nothing_to_cancel", "en"))


async def test_start_and_help_in_the_users_language(bot, tg_fake):
    from tests.telegram.conftest import ChatUser

    chinese = ChatUser(tg_fake, 5151, lang="zh-hans")
    await chinese.command("/start")
    await chinese.wait_text(text("start", "zh"))
    await chinese.command("/help")
    s = bot.settings
    modes = "\n".join(f"• {m.label('zh')}: {m.describe('zh')}" for m in bot.workflows.choosable)
    assert "人物" in modes and "建筑" in modes  # the modes in Chinese too, from the manifest
    await chinese.wait_text(
        text(
            "help",
            "zh",
            modes=modes,
            max_mb=20,
            max_mp=s.max_image_pixels // 1_000_000,
            active=s.user_max_active,
            hourly=s.user_max_per_hour,
        )
    )
    commands = tg_fake.calls_to("setMyCommands")[0]["commands"]
    assert {c["command"] for c in commands} >= {"start", "help", "mode", "cancel"}


async def test_plain_text_and_other_media_get_a_hint(bot, user, tg_fake):
    await tg_fake.push_update({"message": user._message(text="hello")})
    await user.wait_text(text("start", "en"))
    sticker = {
        "file_id": "S1",
        "file_unique_id": "uS1",
        "type": "regular",
        "width": 1,
        "height": 1,
        "is_animated": False,
        "is_video": False,
    }
    await tg_fake.push_update({"message": user._message(sticker=sticker)})
    await user.wait_text(text("not_an_image", "en"))


async def test_an_edited_caption_does_not_queue_the_photo_again(bot, user, tg_fake, photo_bytes):
    message = await user.send_photo(photo_bytes)
    await user.wait_text("Queued — #1")
    await tg_fake.push_update({"edited_message": {**message, "caption": "building", "edit_date": 1700000001}})
    await user.command("/help")
    await user.wait_text("Modes:")
    assert len(await queued_tasks(bot)) == 1
