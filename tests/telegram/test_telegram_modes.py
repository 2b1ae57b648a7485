"""A mode added to the manifest alone (no Python change) is offered by the Telegram bot everywhere."""

from __future__ import annotations

from backend.tasks import Task
from backend.texts import text
from bots.telegram.keyboards import result_markup
from tests.support.workflows import workflows_with_new_mode
from tests.telegram.conftest import ChatUser


async def test_a_new_mode_is_offered_in_mode_help_captions_and_other_mode(start_bot, tg_fake, tmp_path, photo_bytes):
    async with start_bot(workflows_dir=workflows_with_new_mode(tmp_path)) as (services, errors):
        chinese = ChatUser(tg_fake, 5150, lang="zh")
        await chinese.command("/mode")
        await chinese.wait_text("棕褐色")
        [answer] = [c for c in tg_fake.calls_to("sendMessage") if int(c["chat_id"]) == chinese.id]
        buttons = {b["callback_data"]: b["text"] for row in answer["reply_markup"]["inline_keyboard"] for b in row}
        assert buttons == {"m:person": "✓ 人物", "m:building": "建筑", "m:sepia": "棕褐色"}

        await chinese.press("m:sepia", answer.result["message_id"])
        await chinese.wait_text(text("mode_set", "zh", mode="棕褐色"))
        assert await services.intake.default_mode(f"telegram:{chinese.id}") == "sepia"

        await chinese.command("/help")
        await chinese.wait_text("• 棕褐色: 温暖的老照片色调")

        user = ChatUser(tg_fake)
        await user.send_photo(photo_bytes, caption="make it sepia please")
        await user.wait_text("Queued — #1")
        [(_, fields)] = await services.redis.xrange(services.settings.tasks_stream)
        assert Task.decode(fields).mode == "sepia"

        labels = [
            b.text
            for b in result_markup(
                "blob:in:" + "a" * 32, "blob:out:" + "b" * 32, "en", services.workflows.others("person")
            ).inline_keyboard[0]
        ]
        assert labels == ["Try building", "Try sepia", "Compare"]
    assert not errors, errors


async def test_a_mode_users_may_not_choose_is_not_offered(bot, user):
    await user.command("/mode preview")
    await user.wait_text(text("unknown_mode", "en", modes="person, building"))
    assert await bot.intake.default_mode(f"telegram:{user.id}") == "person"
