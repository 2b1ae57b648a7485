"""The same interaction delivered twice (a resumed gateway session replays it) is one task per photo,
answered as the first delivery was: real discord.py against the fake, real Redis."""

from __future__ import annotations

import asyncio

from tests.discord.test_discord_commands import colorize, tasks_in_stream
from tests.fakes.discord_api import APP_ID


def original_edits(fake, interaction: dict) -> list:
    return fake.calls_to("PATCH", rf"/webhooks/{APP_ID}/{interaction['token']}/messages/@original")


async def test_the_same_interaction_twice_is_one_task(bot, discord_fake, photo_bytes, redis, discord_settings):
    interaction = colorize(discord_fake, discord_fake.add_file(photo_bytes, "old.jpg"))
    await discord_fake.push_interaction(interaction)
    [first] = await discord_fake.wait_for(lambda: original_edits(discord_fake, interaction))
    await discord_fake.push_interaction(interaction)
    await discord_fake.wait_for(lambda: len(original_edits(discord_fake, interaction)) == 2)
    again = original_edits(discord_fake, interaction)[1]
    assert again.json["content"] == first.json["content"] and first.json["content"].startswith("Queued — #1")
    assert len(await tasks_in_stream(redis, discord_settings)) == 1
    assert len(discord_fake.downloads) == 1, "the photo is not fetched again"
    # The fixture also checks no interaction was acknowledged twice (Discord refuses that: 40060).
    assert len(discord_fake.calls_to("POST", rf"/interactions/{interaction['id']}/.*/callback")) == 1


async def test_a_replayed_context_menu_queues_no_photo_twice(bot, discord_fake, photo_bytes, redis, discord_settings):
    images = [discord_fake.add_file(photo_bytes, f"p{i}.jpg") for i in range(3)]
    target = discord_fake.user_message(images, author_id=77)
    interaction = discord_fake.message_command("Colorize photo", target)
    for _ in range(2):
        await discord_fake.push_interaction(interaction)
        await discord_fake.wait_for(lambda: original_edits(discord_fake, interaction))
    await discord_fake.wait_for(lambda: len(original_edits(discord_fake, interaction)) == 2)
    assert original_edits(discord_fake, interaction)[1].json["content"].startswith("Queued 3 photos")
    assert len(await tasks_in_stream(redis, discord_settings)) == 3


async def test_a_replay_while_the_first_is_still_queueing_is_deferred_once_and_queued_once(
    start_bot, discord_fake, photo_bytes, redis, discord_settings
):
    # The first delivery's place must not refuse the replay.
    async with start_bot(discord_settings.model_copy(update={"user_max_active": 1})):
        interaction = colorize(discord_fake, discord_fake.add_file(photo_bytes, "old.jpg"))
        await discord_fake.push_interaction(interaction)
        await discord_fake.push_interaction(interaction)  # right behind it, before the first has answered
        await discord_fake.wait_for(lambda: original_edits(discord_fake, interaction))
        await asyncio.sleep(0.5)  # the replay is handled meanwhile; the status already says it: no second edit
        contents = [call.json["content"] for call in original_edits(discord_fake, interaction)]
        assert contents and all(c.startswith("Queued — #1") for c in contents), contents
        assert len(await tasks_in_stream(redis, discord_settings)) == 1
        assert len(discord_fake.calls_to("POST", rf"/interactions/{interaction['id']}/.*/callback")) == 1
        assert not discord_fake.calls_to("POST", rf"/webhooks/{APP_ID}/{interaction['token']}"), "no refusal"


async def test_an_other_mode_press_replayed_is_one_task(bot, discord_fake, photo_bytes, redis, discord_settings):
    from bots.discord.messages import OTHER_MODE_PREFIX
    from tests.discord.conftest import store_finished_result

    task_id = "e" * 32
    await store_finished_result(bot.services, photo_bytes, task_id)
    press = discord_fake.button_click(f"{OTHER_MODE_PREFIX}{task_id}:building", discord_fake.user_message([]))
    await discord_fake.push_interaction(press)
    await discord_fake.wait_for(lambda: original_edits(discord_fake, press))
    await discord_fake.push_interaction(press)
    await discord_fake.wait_for(lambda: len(original_edits(discord_fake, press)) == 2)
    contents = [call.json["content"] for call in original_edits(discord_fake, press)]
    assert contents[0] == contents[1] and contents[0].startswith("Queued — #1")
    [task] = await tasks_in_stream(redis, discord_settings)
    assert task["mode"] == "building"
