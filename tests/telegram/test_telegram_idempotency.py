"""The same Telegram message delivered twice is one task, answered as the first delivery was.

Real PTB against the Bot API fake, real Redis: polling (the message again under a new update_id, as
after a crash before the offset was confirmed) and webhook (Telegram retrying the same POST).
"""

from __future__ import annotations

import asyncio
from typing import Any

from pydantic import SecretStr

from backend import keys
from backend.services import Services
from backend.texts import text
from bots.telegram.app import build_application, running
from bots.telegram.ratelimit import FloodAwareRateLimiter
from tests.support.redis_server import free_port
from tests.telegram.conftest import ChatUser, telegram_settings

QUEUED_1 = text("queued", "en", position=1, eta=30)[: len("Queued — #1")]


async def task_ids(services: Services) -> list[str]:
    entries = await services.redis.xrange(services.settings.tasks_stream)
    return [fields[b"task_id"].decode() for _, fields in entries]


async def handled_again(tg_fake, edits_before: int) -> None:
    """The redelivery is handled once it has answered on the first status (an edit call, even a refused one)."""
    await tg_fake.wait_for(lambda: len(tg_fake.calls_to("editMessageText")) > edits_before)


async def test_polling_redelivery_under_a_new_update_id_is_not_queued_again(bot, user, tg_fake, photo_bytes):
    message = await user.send_photo(photo_bytes)
    await user.wait_text(QUEUED_1)
    [status] = tg_fake.calls_to("sendMessage")
    status_id = status.result["message_id"]
    [first] = await task_ids(bot)
    # The bot crashed after queueing but before its "Queued" edit: the status still says "Received".
    tg_fake.message(user.id, status_id)["text"] = text("received", "en")
    edits = len(tg_fake.calls_to("editMessageText"))

    await tg_fake.push_update({"message": message})  # same message, a new update_id
    await handled_again(tg_fake, edits)

    assert await task_ids(bot) == [first]
    assert len(tg_fake.calls_to("sendMessage")) == 1, "no second status message, no refusal"
    assert len(tg_fake.calls_to("getFile")) == 1, "the photo is not downloaded again"
    again = tg_fake.calls_to("editMessageText")[-1]
    assert again["message_id"] == status_id and again["text"].startswith(QUEUED_1)
    assert tg_fake.message(user.id, status_id)["text"].startswith(QUEUED_1)
    assert await bot.redis.scard(keys.user_active(f"telegram:{user.id}")) == 1
    assert await bot.redis.ttl(keys.event_claim(f"telegram:{user.id}:{message['message_id']}")) > 0


async def test_an_album_delivered_again_is_not_queued_again(bot, user, tg_fake, photo_bytes):
    messages = [await user.send_photo(photo_bytes, media_group_id="alb1") for _ in range(3)]
    await user.wait_text("Queued 3 photos")
    first = await task_ids(bot)
    assert len(first) == 3
    edits = len(tg_fake.calls_to("editMessageText"))
    for message in messages:
        await tg_fake.push_update({"message": message})
    await handled_again(tg_fake, edits)
    await asyncio.sleep(0.2)  # nothing else is coming: no second status, no task
    assert await task_ids(bot) == first
    assert len(tg_fake.calls_to("sendMessage")) == 1


async def run_webhook_bot(settings, tg_fake):
    port = free_port()
    hook = telegram_settings(
        settings,
        tg_fake,
        telegram_webhook_url=f"http://127.0.0.1:{port}/tg-hook",
        telegram_webhook_listen="127.0.0.1",
        telegram_webhook_port=port,
        telegram_webhook_secret=SecretStr("s3cret"),
        user_max_active=1,
    )  # the first delivery's place must not refuse its retry
    services = Services.create(hook)
    app = build_application(hook, services, rate_limiter=FloodAwareRateLimiter(overall_max_rate=0, group_max_rate=0))
    errors: list[BaseException] = []

    async def record(update: object, context: Any) -> None:
        errors.append(context.error)

    app.add_error_handler(record)
    return services, app, hook, errors


async def test_webhook_post_retried_by_telegram_is_one_task(settings, tg_fake, photo_bytes):
    services, app, hook, errors = await run_webhook_bot(settings, tg_fake)
    user = ChatUser(tg_fake)
    file_id = tg_fake.add_file(photo_bytes)
    photo = {"file_id": file_id, "file_unique_id": "u1", "width": 512, "height": 512, "file_size": len(photo_bytes)}
    update = {"update_id": 500, "message": user._message(photo=[photo])}
    tg_fake._store(update["message"])
    try:
        async with running(app, hook):
            # Telegram's first POST timed out on its side and it sends the same update again, while
            # the first one is still being handled; then once more later.
            statuses = await asyncio.gather(
                tg_fake.post_webhook(update, secret="s3cret"), tg_fake.post_webhook(update, secret="s3cret")
            )
            assert statuses == [200, 200]
            await user.wait_text(QUEUED_1)

            def live_statuses() -> list[int]:
                return [
                    c.result["message_id"]
                    for c in tg_fake.calls_to("sendMessage")
                    if c.result and tg_fake.message(user.id, c.result["message_id"]) is not None
                ]

            # Each delivery that got as far as a status message either queued the photo or, having lost
            # the race, removed its status: one is left, and it says "Queued".
            await tg_fake.wait_for(
                lambda: (
                    len(live_statuses()) == 1
                    and all(tg_fake.message(user.id, s)["text"].startswith(QUEUED_1) for s in live_statuses())
                )
            )
            edits = len(tg_fake.calls_to("editMessageText"))
            assert await tg_fake.post_webhook(update, secret="s3cret") == 200
            await handled_again(tg_fake, edits)
            tasks = await task_ids(services)
            [status] = live_statuses()
    finally:
        await services.close()
    assert not errors, errors
    assert len(tasks) == 1
    assert tg_fake.message(user.id, status)["text"].startswith(QUEUED_1)
    assert not any("wrong" in t for t in user.texts())


async def test_an_other_mode_press_delivered_twice_is_one_task(bot, user, tg_fake, photo_bytes):
    from bots.telegram.keyboards import result_markup
    from tests.telegram.test_telegram_admin_and_buttons import stored_result

    input_key, output_key = await stored_result(bot, photo_bytes)
    other = result_markup(input_key, output_key, "en", bot.workflows.others("person")).inline_keyboard[0][0]
    result_message = {
        "message_id": tg_fake.bot_message(user.id, "result"),
        "date": 1700000000,
        "chat": {"id": user.id, "type": "private"},
        "text": "result",
    }
    press = {
        "callback_query": {
            "id": "press-1",
            "chat_instance": "ci",
            "data": other.callback_data,
            "message": result_message,
            "from": {"id": user.id, "is_bot": False, "first_name": "Ann", "language_code": "en"},
        }
    }
    await tg_fake.push_update(press)
    await user.wait_text(QUEUED_1)
    edits = len(tg_fake.calls_to("editMessageText"))
    await tg_fake.push_update(press)  # the same press again, under a new update_id
    await handled_again(tg_fake, edits)
    assert len(await task_ids(bot)) == 1
    assert len(tg_fake.calls_to("sendMessage")) == 1, "one status message"


async def test_a_redelivery_after_the_result_leaves_the_chat_alone(bot, user, tg_fake, photo_bytes):
    message = await user.send_photo(photo_bytes)
    await user.wait_text(QUEUED_1)
    [first] = await task_ids(bot)
    [status] = tg_fake.calls_to("sendMessage")
    await bot.redis.hset(keys.task(first), "state", "done")  # the result came and turned the status into a note
    tg_fake.message(user.id, status.result["message_id"])["text"] = "Sorry, this photo couldn't be processed."
    calls = len(tg_fake.calls)
    again = await tg_fake.push_update({"message": message})
    # Fetched (the next poll confirms its update_id), then given time to do anything at all.
    await tg_fake.wait_for(
        lambda: any(int(c.params.get("offset") or 0) > again["update_id"] for c in tg_fake.calls_to("getUpdates"))
    )
    await asyncio.sleep(0.5)
    assert [c.method for c in tg_fake.calls[calls:] if c.method != "getUpdates"] == []
    assert tg_fake.message(user.id, status.result["message_id"])["text"].startswith("Sorry")
