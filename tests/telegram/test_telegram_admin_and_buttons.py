"""Admin commands (allowed and refused), the Other mode and Compare buttons, and webhook mode."""

from __future__ import annotations

import io
import logging

from PIL import Image
from pydantic import SecretStr

from backend.images import prepare_input
from backend.replies import TelegramReply
from backend.tasks import Task
from backend.texts import text
from bots.telegram.app import build_application, running
from bots.telegram.keyboards import cancel_markup, result_markup
from tests.support.redis_server import free_port
from tests.telegram.conftest import ADMIN_ID, ChatUser, telegram_settings

PNG_MAGIC = b"\x89PNG"


async def test_admin_commands(bot, admin, tg_fake):
    await admin.command("/queue")
    await admin.wait_text("Queued: 0")
    await admin.command("/pause")
    await admin.wait_text(text("admin_paused", "en"))
    assert (await bot.admin.status()).paused
    await admin.command("/resume")
    await admin.wait_text(text("admin_resumed", "en"))
    assert not (await bot.admin.status()).paused
    await admin.command("/dlq")
    await admin.wait_text(text("admin_dlq_empty", "en"))
    await admin.command("/retry")
    await admin.wait_text(text("admin_retry_usage", "en"))
    await admin.command("/retry abcdef0123456789")
    await admin.wait_text(text("admin_retry_missing", "en", task_id="abcdef0123456789"))
    await admin.command("/purge_dlq")
    await admin.wait_text(text("admin_purged", "en", count=0))
    await admin.command("/stats")
    [chart] = await tg_fake.wait_call("sendPhoto")
    assert chart.files["photo"].startswith(PNG_MAGIC)
    assert "p50" in chart["caption"]


async def test_admin_texts_in_chinese(bot, tg_fake):
    """A Chinese admin reads /queue, /dlq and the /stats caption in Chinese, from the catalog."""
    admin = ChatUser(tg_fake, ADMIN_ID, lang="zh-hans")
    await admin.command("/queue")
    status = await admin.wait_text("排队：0")
    assert "运行中：0" in status and "工作进程" in status and "Queued" not in status
    await admin.command("/dlq")
    await admin.wait_text(text("admin_dlq_empty", "zh"))
    await admin.command("/stats")
    [chart] = await tg_fake.wait_call("sendPhoto")
    assert chart["caption"].startswith("最近 60 分钟：完成 0")
    await admin.command("/mute_alerts 5")
    await admin.wait_text(text("admin_muted", "zh", minutes=5))


async def test_admins_get_their_command_menu_in_both_languages(bot, tg_fake):
    scoped = [c for c in tg_fake.calls_to("setMyCommands") if c.params.get("scope")]
    english, chinese = [next(c for c in scoped if c.params.get("language_code") == code) for code in (None, "zh")]
    assert english["scope"] == chinese["scope"] == {"type": "chat", "chat_id": ADMIN_ID}
    described = {c["command"]: c["description"] for c in chinese["commands"]}
    assert described["queue"] == text("cmd_queue", "zh") and described["start"] == text("cmd_start", "zh")
    assert {c["command"]: c["description"] for c in english["commands"]}["stats"] == text("cmd_stats", "en")


async def test_dead_letters_listed_and_retried(bot, admin):
    """Each dead letter carries its Retry; a pressed one has done its job and leaves the list's keyboard,
    the others stay."""
    tasks = [
        Task(
            task_id=letter * 32,
            mode="person",
            input="blob:in:" + "0" * 32,
            reply=TelegramReply(chat_id=admin.id),
            user=f"telegram:{admin.id}",
        )
        for letter in "ed"
    ]
    for task in tasks:
        fields = {
            **task.encode(),
            "reason": "too many deliveries",
            "dead_at": "1700000000000",
            "source": bot.settings.tasks_stream,
            "source_id": "1-0",
        }
        await bot.redis.xadd(bot.settings.dead_stream, fields)
    task = tasks[-1]  # the newest is listed first
    await admin.command("/dlq")
    await admin.wait_text(f"{task.task_id} (")
    listing = [c for c in admin.fake.calls_to("sendMessage") if f"{task.task_id} (" in str(c.params.get("text"))][-1]
    [[retry], [other]] = listing["reply_markup"]["inline_keyboard"]
    assert retry["text"] == f"Retry {task.task_id[:8]}"
    await admin.press(retry["callback_data"], listing.result["message_id"])
    answer = await admin.fake.wait_for(
        lambda: [c for c in admin.fake.calls_to("answerCallbackQuery") if c.params.get("text")]
    )
    assert answer[-1]["text"] == text("admin_retried", "en", task_id=task.task_id)
    assert await bot.redis.xlen(bot.settings.tasks_stream) == 1
    [edit] = await admin.fake.wait_call("editMessageReplyMarkup")
    assert edit["reply_markup"]["inline_keyboard"] == [[other]]
    assert admin.fake.message(admin.id, listing.result["message_id"])["reply_markup"]["inline_keyboard"] == [[other]]


async def test_admin_commands_refused_for_others(bot, user, caplog):
    caplog.set_level(logging.WARNING, logger="bots.telegram.admin_handlers")
    for command in ("/queue", "/dlq", "/retry x", "/purge_dlq", "/pause", "/resume", "/stats"):
        await user.command(command)
    await user.fake.wait_for(lambda: user.texts().count(text("not_allowed", "en")) == 7)
    assert not (await bot.admin.status()).paused
    refused = [r.getMessage() for r in caplog.records if "refused admin command" in r.getMessage()]
    assert len(refused) == 7 and all(f"telegram:{user.id}" in line for line in refused)


async def stored_result(services, photo_bytes: bytes) -> tuple[str, str]:
    """An input and a (pretend) output blob, as a finished task leaves them."""
    prepared = prepare_input(photo_bytes, max_bytes=10**8, max_pixels=10**8)
    tinted = Image.open(io.BytesIO(prepared.data)).convert("RGB")
    tinted.putpixel((0, 0), (255, 0, 0))
    out = io.BytesIO()
    tinted.save(out, "PNG")
    return await services.blobs.put("in", prepared.data), await services.blobs.put("out", out.getvalue())


async def test_other_mode_resubmits_the_stored_input(bot, user, tg_fake, photo_bytes):
    input_key, output_key = await stored_result(bot, photo_bytes)
    other, _ = [
        b.callback_data
        for b in result_markup(input_key, output_key, "en", bot.workflows.others("person")).inline_keyboard[0]
    ]
    await user.press(other, message_id=555)
    await user.wait_text("Queued — #1")
    [(_, fields)] = await bot.redis.xrange(bot.settings.tasks_stream)
    task = Task.decode(fields)
    assert task.mode == "building" and task.input == input_key
    assert task.reply.message_id == 555


async def test_compare_sends_a_side_by_side(bot, user, tg_fake, photo_bytes):
    input_key, output_key = await stored_result(bot, photo_bytes)
    _, compare = [
        b.callback_data
        for b in result_markup(input_key, output_key, "en", bot.workflows.others("person")).inline_keyboard[0]
    ]
    await user.press(compare, message_id=556)
    [photo] = await tg_fake.wait_call("sendPhoto")
    assert photo["caption"] == text("compare_caption", "en")
    picture = Image.open(io.BytesIO(photo.files["photo"]))
    assert picture.width > 2 * 512 - 50 and picture.height > 400
    assert tg_fake.calls_to("sendChatAction")

    await bot.blobs.delete(output_key)
    await user.press(compare, message_id=556)
    await user.wait_text(text("compare_unavailable", "en"))


async def test_other_mode_on_an_expired_input(bot, user):
    gone = "blob:in:" + "e" * 32
    data = result_markup(gone, "", "en", bot.workflows.others("person")).inline_keyboard[0][0].callback_data
    await user.press(data, message_id=557)
    await user.wait_text(text("input_expired", "en"))


async def test_webhook_checks_the_secret(settings, tg_fake, photo_bytes):
    port = free_port()
    hook_settings = telegram_settings(
        settings,
        tg_fake,
        telegram_webhook_url=f"http://127.0.0.1:{port}/tg-hook",
        telegram_webhook_listen="127.0.0.1",
        telegram_webhook_port=port,
        telegram_webhook_secret=SecretStr("s3cret"),
    )
    from backend.services import Services

    services = Services.create(hook_settings)
    app = build_application(hook_settings, services)
    user = ChatUser(tg_fake)
    try:
        async with running(app, hook_settings):
            [hook] = tg_fake.calls_to("setWebhook")
            assert hook["url"] == f"http://127.0.0.1:{port}/tg-hook" and hook["secret_token"] == "s3cret"
            start = {
                "message": user._message(text="/start", entities=[{"type": "bot_command", "offset": 0, "length": 6}])
            }
            assert await tg_fake.post_webhook(start, secret="wrong") == 403
            assert await tg_fake.post_webhook(start, secret=None) == 403
            assert await tg_fake.post_webhook(start, secret="s3cret") == 200
            await user.wait_text(text("start", "en"))
            assert user.texts() == [text("start", "en")]
    finally:
        await services.close()
    assert not tg_fake.calls_to("getUpdates")


async def test_a_failing_handler_is_logged_and_the_user_told(start_bot, user, photo_bytes, caplog):
    async with start_bot() as (services, errors):

        async def broken(*args: object) -> None:
            raise RuntimeError("redis went away")

        services.intake.set_default_mode = broken
        await user.command("/mode person")
        await user.wait_text(text("error_generic", "en"))
    assert [str(e) for e in errors] == ["redis went away"]
    logged = [r for r in caplog.records if r.name == "bots.telegram.handlers" and "handler failed" in r.getMessage()]
    assert logged and f"user {user.id}" in logged[0].getMessage()


async def test_a_photo_that_fails_mid_way_turns_its_status_into_an_apology(
    start_bot, user, tg_fake, photo_bytes, caplog
):
    async with start_bot() as (services, errors):

        async def broken(user_key: str) -> str:
            raise RuntimeError("redis went away")

        services.intake.default_mode = broken
        await user.send_photo(photo_bytes)
        await user.wait_text(text("error_generic", "en"))
    assert tg_fake.calls_to("editMessageText")[-1].params["text"] == text("error_generic", "en")
    assert any(
        "could not be queued" in r.getMessage() and f"telegram:{user.id}" in r.getMessage() for r in caplog.records
    )


async def test_a_cancel_that_no_longer_applies_leaves_its_message(bot, user, tg_fake):
    """Cancel under a status whose photo is gone (finished, or never known): "no longer applies", and
    the button is taken off the message (Telegram can't grey it out)."""
    markup = cancel_markup(TelegramReply(chat_id=user.id, status_message_id=1), "f" * 32, "en").to_dict()
    status = tg_fake.bot_message(user.id, "Queued — #1 in line.", reply_markup=markup)
    await user.press(markup["inline_keyboard"][0][0]["callback_data"], status)
    [answer] = await tg_fake.wait_call("answerCallbackQuery")
    assert answer["text"] == text("button_gone", "en")
    [edit] = await tg_fake.wait_call("editMessageReplyMarkup")
    assert "reply_markup" not in edit.params and "reply_markup" not in tg_fake.message(user.id, status)
