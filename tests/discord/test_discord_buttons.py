"""The buttons are DynamicItems: discord.py routes a press by its custom_id's template (old formats
included), a button that no longer applies is disabled on its message, and the other buttons there
stay as they were."""

from __future__ import annotations

from backend.replies import DiscordReply
from backend.tasks import Task
from backend.texts import text
from bots.discord.buttons import BUTTONS, CancelButton, OtherModeButton
from bots.discord.messages import CANCEL_PREFIX, COMPARE_PREFIX, OTHER_MODE_PREFIX, RETRY_PREFIX, result_view
from tests.discord.conftest import store_finished_result
from tests.discord.test_discord_admin import ADMIN_ID, admin_command, answer
from tests.fakes.discord_api import APP_ID

EPHEMERAL = 64


def routed_to(custom_id: str) -> list[str]:
    return [item.__name__ for item in BUTTONS if item.__discord_ui_compiled_template__.fullmatch(custom_id)]


def test_each_custom_id_format_routes_to_one_button(bot):
    task = "0123456789abcdef" * 2
    assert routed_to(f"{CANCEL_PREFIX}telegram:1:2") == ["CancelButton"]
    assert routed_to(f"{RETRY_PREFIX}{task}") == ["RetryButton"]
    assert routed_to(f"repairbot:dlq-retry:{task}") == ["DeadRetryButton"]
    assert routed_to(f"{COMPARE_PREFIX}{task}") == ["CompareButton"]
    assert routed_to(f"{OTHER_MODE_PREFIX}{task}:building") == ["OtherModeButton"]
    assert routed_to(f"{OTHER_MODE_PREFIX}{task}") == ["OtherModeButton"]  # buttons posted before modes were named
    assert routed_to("someone-elses:button") == []
    # What the sender posts is what the bot routes: every button of a result view has its handler.
    view = result_view(task, "en", bot.services.workflows, "person")
    assert [routed_to(item.custom_id) for item in view.children] == [["OtherModeButton"], ["CompareButton"]]
    registered = bot._connection._view_store._dynamic_items
    assert {CancelButton, OtherModeButton} <= set(registered.values())


async def test_a_press_on_an_old_other_mode_button_runs_the_first_other_mode(bot, discord_fake, redis, photo_bytes):
    task_id = "e" * 32
    await store_finished_result(bot.services, photo_bytes, task_id)
    press = discord_fake.button_click(f"{OTHER_MODE_PREFIX}{task_id}", discord_fake.user_message([]))
    await discord_fake.push_interaction(press)
    [edit] = await discord_fake.wait_for_call("PATCH", rf"/webhooks/{APP_ID}/{press['token']}/messages/@original")
    assert edit.json["content"].startswith("Queued — #1")
    [(_, fields)] = await redis.xrange(bot.services.settings.tasks_stream)
    assert fields[b"mode"] == b"building"


async def test_a_stale_cancel_is_disabled_and_the_other_buttons_stay(bot, discord_fake):
    """Cancel under a status whose photos are all finished: "no longer applies", and the button is
    greyed out in place (the message keeps its other buttons, enabled)."""
    message = discord_fake.user_message([], author_id=int(APP_ID))
    cancel, other = f"{CANCEL_PREFIX}discord:gone", f"{COMPARE_PREFIX}{'f' * 32}"
    message["components"] = [
        {
            "type": 1,
            "components": [
                {"type": 2, "style": 4, "label": "Cancel", "custom_id": cancel},
                {"type": 2, "style": 2, "label": "Compare", "custom_id": other},
            ],
        }
    ]
    press = discord_fake.button_click(cancel, message)
    await discord_fake.push_interaction(press)
    [update] = await discord_fake.wait_for_call("POST", rf"/interactions/{press['id']}/.*/callback")
    assert update.json["type"] == 7  # UPDATE_MESSAGE: the press edits the message it is on
    [row] = update.json["data"]["components"]
    assert [(b["custom_id"], b.get("disabled", False)) for b in row["components"]] == [(cancel, True), (other, False)]
    assert discord_fake.messages[message["id"]]["components"] == update.json["data"]["components"]
    assert int(message["id"]) not in bot._connection._view_store._views  # nothing kept listening for it
    [said] = await discord_fake.wait_for_call("POST", rf"/webhooks/{APP_ID}/{press['token']}")
    assert said.json["content"] == text("button_gone", "en") and int(said.json["flags"]) & EPHEMERAL


async def test_a_failing_press_is_answered_and_reported(bot, discord_fake, redis):
    """A press whose handler raises is answered ("something went wrong") like a failed command."""

    async def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("redis went away")

    bot.services.lines.owner = broken
    press = discord_fake.button_click(f"{CANCEL_PREFIX}discord:x", discord_fake.user_message([]))
    await discord_fake.push_interaction(press)
    [call] = await discord_fake.wait_for_call("POST", rf"/interactions/{press['id']}/.*/callback")
    assert call.json["data"]["content"] == text("error_generic", "en")
    assert [type(e) for e in bot.command_errors] == [RuntimeError]
    bot.command_errors.clear()  # the one failure this test made on purpose


async def test_a_dead_letters_retry_is_for_admins_and_retires_once_done(bot, discord_fake, redis, discord_settings):
    """The /dlq Retry is routed like any button: refused for others, and for an admin it queues the task
    again and is disabled on the listing (its job is done)."""
    task = Task(
        task_id="d" * 32,
        mode="person",
        input="blob:in:" + "0" * 32,
        reply=DiscordReply(application_id=APP_ID, channel_id="500", user_id="42"),
        user="discord:42",
    )
    fields = {**task.encode(), "reason": "broken", "dead_at": "0", "source": discord_settings.tasks_stream}
    await redis.xadd(discord_settings.dead_stream, fields)
    listing = admin_command(discord_fake, "dlq")
    await discord_fake.push_interaction(listing)
    shown = (await answer(discord_fake, listing)).json["data"]
    message = {**discord_fake.user_message([], author_id=int(APP_ID)), "components": shown["components"]}
    [[button]] = [row["components"] for row in shown["components"]]

    press = discord_fake.button_click(button["custom_id"], message, user_id=99)
    await discord_fake.push_interaction(press)
    [refused] = await discord_fake.wait_for_call("POST", rf"/interactions/{press['id']}/.*/callback")
    assert refused.json["data"]["content"] == text("not_allowed", "en")
    assert await redis.xlen(discord_settings.tasks_stream) == 0

    press = discord_fake.button_click(button["custom_id"], message, user_id=ADMIN_ID)
    await discord_fake.push_interaction(press)
    [update] = await discord_fake.wait_for_call("POST", rf"/interactions/{press['id']}/.*/callback")
    assert update.json["type"] == 7 and update.json["data"]["components"][0]["components"][0]["disabled"] is True
    [said] = await discord_fake.wait_for_call("POST", rf"/webhooks/{APP_ID}/{press['token']}")
    assert said.json["content"] == text("admin_retried", "en", task_id=task.task_id)
    assert await redis.xlen(discord_settings.tasks_stream) == 1
