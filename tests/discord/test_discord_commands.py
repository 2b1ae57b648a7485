"""/colorize and the "Colorize photo" menu with the real discord.Client against the fake, intake on real Redis."""

from __future__ import annotations

import json
import time

from tests.fakes.discord_api import APP_ID, FakeDiscord

EPHEMERAL = 64
QUEUED = r"Queued — #\d+ in line, about \d+ s\."


def colorize(
    fake: FakeDiscord, attachment: dict, *, mode: str | None = "person", private: bool | None = None, **kw
) -> dict:
    options = [{"name": "image", "type": 11, "value": attachment["id"]}]
    if mode:
        options.append({"name": "mode", "type": 3, "value": mode})
    if private is not None:
        options.append({"name": "private", "type": 5, "value": private})
    return fake.slash("colorize", options, attachments=[attachment], **kw)


async def original_edit(fake: FakeDiscord, interaction: dict) -> dict:
    [call] = await fake.wait_for_call("PATCH", rf"/webhooks/{APP_ID}/{interaction['token']}/messages/@original")
    return call.json


async def ephemeral_refusal(fake: FakeDiscord, interaction: dict) -> str:
    """A public deferral is deleted and the sentence comes as an ephemeral follow-up."""
    [call] = await fake.wait_for_call("POST", rf"/webhooks/{APP_ID}/{interaction['token']}")
    assert int(call.json["flags"]) & EPHEMERAL
    assert fake.calls_to("DELETE", rf"/webhooks/{APP_ID}/{interaction['token']}/messages/@original")
    return call.json["content"]


async def tasks_in_stream(redis, settings) -> list[dict]:
    entries = await redis.xrange(settings.tasks_stream)
    return [{k.decode(): v.decode() for k, v in fields.items()} for _, fields in entries]


async def test_colorize_defers_downloads_and_answers_with_the_place_in_line(
    bot, discord_fake, photo_bytes, redis, discord_settings
):
    attachment = discord_fake.add_file(photo_bytes, "old.jpg")
    interaction = colorize(discord_fake, attachment, mode="building")
    before = time.time()
    await discord_fake.push_interaction(interaction)
    edit = await original_edit(discord_fake, interaction)
    assert edit["content"].startswith("Queued — #1 in line")
    [callback] = discord_fake.calls_to("POST", rf"/interactions/{interaction['id']}/.*/callback")
    assert callback.json["type"] == 5 and not int(callback.json.get("data", {}).get("flags") or 0) & EPHEMERAL
    assert discord_fake.downloads == [attachment["url"].split("/cdn/")[1]]
    [task] = await tasks_in_stream(redis, discord_settings)
    reply = json.loads(task["reply"])
    assert task["mode"] == "building" and task["user"] == "discord:42"
    assert reply["interaction_token"] == interaction["token"] and reply["application_id"] == APP_ID
    assert reply["channel_id"] == "500" and reply["user_id"] == "42" and reply["guild_id"] == "700"
    assert reply["private"] is False and reply["lang"] == "en" and reply["upload_limit"] == 10 * 1024 * 1024
    assert before + 10 * 60 < reply["token_expires_at"] < before + 15 * 60


async def test_private_colorize_is_ephemeral_and_uses_the_default_mode(
    bot, discord_fake, photo_bytes, redis, discord_settings
):
    interaction = colorize(discord_fake, discord_fake.add_file(photo_bytes), mode=None, private=True)
    await discord_fake.push_interaction(interaction)
    await original_edit(discord_fake, interaction)
    [callback] = discord_fake.calls_to("POST", r"/interactions/.*/callback")
    assert int(callback.json["data"]["flags"]) & EPHEMERAL
    [task] = await tasks_in_stream(redis, discord_settings)
    assert task["mode"] == "person" and json.loads(task["reply"])["private"] is True


async def test_chinese_locale_gets_chinese(bot, discord_fake, photo_bytes):
    interaction = colorize(discord_fake, discord_fake.add_file(photo_bytes), locale="zh-CN")
    await discord_fake.push_interaction(interaction)
    assert (await original_edit(discord_fake, interaction))["content"].startswith("已排队 — 第 1 位")


async def test_file_larger_than_our_limit_is_refused_before_download(bot, discord_fake, photo_bytes):
    too_big = bot.services.settings.max_image_bytes + 1
    interaction = colorize(
        discord_fake, discord_fake.add_file(photo_bytes, size=too_big), attachment_size_limit=100 * 1024 * 1024
    )  # a boosted guild lets it through
    await discord_fake.push_interaction(interaction)
    assert (await ephemeral_refusal(discord_fake, interaction)).startswith("This file is larger than 20 MB")
    assert discord_fake.downloads == []


async def test_file_larger_than_the_interaction_limit_is_refused_before_download(bot, discord_fake, photo_bytes):
    interaction = colorize(
        discord_fake, discord_fake.add_file(photo_bytes), private=True, attachment_size_limit=len(photo_bytes) - 1
    )
    await discord_fake.push_interaction(interaction)
    assert (await original_edit(discord_fake, interaction))["content"].startswith("This file is larger than")
    assert discord_fake.downloads == []


async def test_declared_non_image_is_refused_before_download(bot, discord_fake):
    interaction = colorize(discord_fake, discord_fake.add_file(b"%PDF-1.4", "doc.pdf", "application/pdf"))
    await discord_fake.push_interaction(interaction)
    assert (await ephemeral_refusal(discord_fake, interaction)).startswith("That doesn't look like a photo")
    assert discord_fake.downloads == []


async def test_bytes_that_are_not_an_image_are_refused_after_download(bot, discord_fake, redis, discord_settings):
    interaction = colorize(discord_fake, discord_fake.add_file(b"hello, not a photo" * 10, "x.png", "image/png"))
    await discord_fake.push_interaction(interaction)
    sentence = await ephemeral_refusal(discord_fake, interaction)
    assert "JPEG, PNG" in sentence or "damaged" in sentence
    assert await tasks_in_stream(redis, discord_settings) == []


async def test_too_many_pixels_is_refused(start_bot, discord_fake, photo_bytes, discord_settings):
    past_the_ceiling = {"max_image_pixels": 1_000_000 // 10, "max_image_pixels_ceiling": 150_000}  # refused, not shrunk
    async with start_bot(discord_settings.model_copy(update=past_the_ceiling)):
        interaction = colorize(discord_fake, discord_fake.add_file(photo_bytes))
        await discord_fake.push_interaction(interaction)
        assert "megapixels" in await ephemeral_refusal(discord_fake, interaction)


async def test_hourly_limit_refuses_the_next_photo(start_bot, discord_fake, photo_bytes, discord_settings):
    async with start_bot(discord_settings.model_copy(update={"user_max_per_hour": 1})):
        first = colorize(discord_fake, discord_fake.add_file(photo_bytes))
        await discord_fake.push_interaction(first)
        await original_edit(discord_fake, first)
        second = colorize(discord_fake, discord_fake.add_file(photo_bytes))
        await discord_fake.push_interaction(second)
        assert (
            await ephemeral_refusal(discord_fake, second)
        ) == "You've reached 1 photos this hour. Please try again a bit later."


async def test_paused_queue_refuses(bot, discord_fake, photo_bytes):
    await bot.services.admin.pause()
    interaction = colorize(discord_fake, discord_fake.add_file(photo_bytes))
    await discord_fake.push_interaction(interaction)
    assert (await ephemeral_refusal(discord_fake, interaction)).startswith("Colorizing is paused")
    assert discord_fake.downloads == []


async def test_full_queue_refuses(start_bot, discord_fake, photo_bytes, discord_settings):
    async with start_bot(discord_settings.model_copy(update={"queue_cap": 0})):
        interaction = colorize(discord_fake, discord_fake.add_file(photo_bytes))
        await discord_fake.push_interaction(interaction)
        assert (await ephemeral_refusal(discord_fake, interaction)).startswith("We're very busy")


async def test_context_menu_queues_each_image_up_to_four(start_bot, discord_fake, photo_bytes, redis, discord_settings):
    async with start_bot(discord_settings.model_copy(update={"user_max_active": 10})):
        images = [discord_fake.add_file(photo_bytes, f"p{i}.jpg") for i in range(5)]
        pdf = discord_fake.add_file(b"%PDF", "notes.pdf", "application/pdf")
        target = discord_fake.user_message([pdf, *images], author_id=77)
        interaction = discord_fake.message_command("Colorize photo", target)
        await discord_fake.push_interaction(interaction)
        edit = await original_edit(discord_fake, interaction)
        assert edit["content"].startswith("Queued 4 photos — first is #1 in line")
        tasks = await tasks_in_stream(redis, discord_settings)
        assert len(tasks) == 4 and {t["user"] for t in tasks} == {"discord:42"}
        assert [json.loads(t["reply"])["part"] for t in tasks] == ["1/4", "2/4", "3/4", "4/4"]
        assert len(discord_fake.downloads) == 4 and not any("notes.pdf" in d for d in discord_fake.downloads)


async def test_context_menu_on_a_message_without_images_is_refused(bot, discord_fake):
    target = discord_fake.user_message([], content="just text")
    interaction = discord_fake.message_command("Colorize photo", target)
    await discord_fake.push_interaction(interaction)
    assert (await ephemeral_refusal(discord_fake, interaction)).startswith("That doesn't look like a photo")


async def test_buttons_of_a_forgotten_task_answer_politely(bot, discord_fake):
    """The sentence comes only to the presser, and the button that no longer applies is greyed out."""
    for custom_id, sentence in [
        ("repairbot:compare:0123456789abcdef", "Sorry, the original photo is no longer"),
        ("repairbot:other:0123456789abcdef", "Sorry, your photo expired"),
    ]:
        result_message = discord_fake.user_message([], author_id=int(APP_ID))
        press = discord_fake.button_click(custom_id, result_message)
        await discord_fake.push_interaction(press)
        [update] = await discord_fake.wait_for_call("POST", rf"/interactions/{press['id']}/.*/callback")
        [[button]] = [row["components"] for row in update.json["data"]["components"]]
        assert update.json["type"] == 7 and button["custom_id"] == custom_id and button["disabled"] is True
        [said] = await discord_fake.wait_for_call("POST", rf"/webhooks/{APP_ID}/{press['token']}")
        assert said.json["content"].startswith(sentence) and int(said.json["flags"]) & EPHEMERAL


async def test_too_many_photos_in_progress_refuses_but_admins_are_exempt(
    start_bot, discord_fake, photo_bytes, discord_settings
):
    async with start_bot(discord_settings.model_copy(update={"user_max_active": 1})):
        first = colorize(discord_fake, discord_fake.add_file(photo_bytes))
        await discord_fake.push_interaction(first)
        await original_edit(discord_fake, first)
        second = colorize(discord_fake, discord_fake.add_file(photo_bytes))
        await discord_fake.push_interaction(second)
        assert (await ephemeral_refusal(discord_fake, second)) == (
            "You already have 1 photos in progress. Please wait for them to finish."
        )
        for _ in range(2):  # an admin (DISCORD_ADMIN_IDS) is not held to the per-user limits
            by_admin = colorize(discord_fake, discord_fake.add_file(photo_bytes), user_id=4242)
            await discord_fake.push_interaction(by_admin)
            assert (await original_edit(discord_fake, by_admin))["content"].startswith("Queued — #")


async def test_an_attachment_that_cannot_be_fetched_gets_an_apology_not_a_stuck_thinking(
    bot, discord_fake, photo_bytes
):
    attachment = discord_fake.add_file(photo_bytes)
    attachment["url"] = attachment["url"].replace("/cdn/", "/cdn/expired/")  # the CDN answers 404
    interaction = colorize(discord_fake, attachment)
    await discord_fake.push_interaction(interaction)
    assert (await ephemeral_refusal(discord_fake, interaction)) == "Sorry, something went wrong. Please try again."


async def test_context_menu_with_a_damaged_image_queues_the_others_and_says_why_not_that_one(
    start_bot, discord_fake, photo_bytes, redis, discord_settings
):
    async with start_bot(discord_settings.model_copy(update={"user_max_active": 10})):
        images = [
            discord_fake.add_file(photo_bytes, "a.jpg"),
            discord_fake.add_file(b"garbage" * 40, "b.png", "image/png"),
        ]
        images.append(discord_fake.add_file(photo_bytes, "c.jpg"))
        interaction = discord_fake.message_command("Colorize photo", discord_fake.user_message(images, author_id=77))
        await discord_fake.push_interaction(interaction)
        edit = await original_edit(discord_fake, interaction)
        assert edit["content"].startswith("Queued 2 photos — first is #1 in line")
        [follow_up] = await discord_fake.wait_for_call("POST", rf"/webhooks/{APP_ID}/{interaction['token']}")
        assert int(follow_up.json["flags"]) & EPHEMERAL and "JPEG, PNG" in follow_up.json["content"]
        tasks = await tasks_in_stream(redis, discord_settings)
        assert [json.loads(t["reply"])["part"] for t in tasks] == ["1/3", "3/3"]
        assert len(discord_fake.downloads) == 3
