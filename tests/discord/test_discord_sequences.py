"""The whole sequence a Discord user sees: the "thinking" status moves only forward, carries Cancel
while queued or running, and is gone once the result is there. Real discord.py against the fake,
worker + notifier + Discord sender, ComfyUI fake, real Redis."""

from __future__ import annotations

import pytest

from backend.services import make_blob_store
from backend.texts import text
from bots.discord.sender import build_sender
from tests.fakes.discord_api import APP_ID, FakeDiscord
from tests.support.pipeline import running_pipeline
from tests.support.transcripts import discord_interaction, never_backwards, stage_of


def colorize(fake: FakeDiscord, photo: bytes, user_id: int = 42) -> dict:
    attachment = fake.add_file(photo, "old.jpg")
    options = [{"name": "image", "type": 11, "value": attachment["id"]}]
    return fake.slash("colorize", options, attachments=[attachment], user_id=user_id)


@pytest.fixture
async def pipeline(discord_settings, redis, start_bot):
    settings = discord_settings.model_copy(update={"status_refresh_s": 0.2})
    sender = build_sender(settings, make_blob_store(settings, redis), progress_every_s=0.1)
    async with running_pipeline(settings, {"discord": sender}) as services:
        async with start_bot(settings, services) as bot:
            yield bot


def original_texts(fake: FakeDiscord, token: str) -> list[str]:
    return [line.text for line in discord_interaction(fake, token) if line.kind == "edited"]


async def wait_original(fake: FakeDiscord, token: str, stage: int) -> dict:
    """The latest edit of the original response once it reached `stage` (its components included)."""

    def reached():
        edits = [
            c
            for c in fake.calls_to("PATCH", rf"/webhooks/{APP_ID}/{token}/messages/@original")
            if c.status == 200 and stage_of(c.json.get("content", "")) >= stage
        ]
        return edits[-1] if edits else None

    return (await fake.wait_for(reached, timeout=30)).json


async def press_cancel(fake: FakeDiscord, interaction: dict, original: dict, user_id: int = 42) -> str:
    [[cancel]] = [[c for c in row["components"]] for row in original["components"]]
    assert cancel["label"] == "Cancel"
    status_message = {**fake.user_message([], author_id=int(APP_ID)), "components": original["components"]}
    press = fake.button_click(cancel["custom_id"], status_message, user_id=user_id)
    await fake.push_interaction(press)
    [answer] = await fake.wait_for_call("POST", rf"/interactions/{press['id']}/.*/callback")
    return answer.json["data"]["content"]


async def test_status_moves_forward_and_is_gone_at_the_end(pipeline, discord_fake, photo_bytes):
    interaction = colorize(discord_fake, photo_bytes)
    await discord_fake.push_interaction(interaction)
    await discord_fake.wait_for_call(
        "DELETE", rf"/webhooks/{APP_ID}/{interaction['token']}/messages/@original", timeout=30
    )
    texts = original_texts(discord_fake, interaction["token"])
    assert never_backwards(texts) and len(texts) == len(set(texts)), texts
    kinds = [line.kind for line in discord_interaction(discord_fake, interaction["token"])]
    assert kinds[-2:] == ["followup", "deleted"]  # the result, then the status goes


async def test_cancel_while_queued(pipeline, discord_fake, comfy_fake, photo_bytes):
    comfy_fake.delay_s = 2
    first = colorize(discord_fake, photo_bytes, user_id=41)
    await discord_fake.push_interaction(first)
    await wait_original(discord_fake, first["token"], 2)  # the first photo is colorizing
    second = colorize(discord_fake, photo_bytes)
    await discord_fake.push_interaction(second)
    queued = await wait_original(discord_fake, second["token"], 1)
    assert queued["content"].startswith("Queued — #")
    assert await press_cancel(discord_fake, second, queued, user_id=99) == text("not_yours", "en")
    assert await press_cancel(discord_fake, second, queued) == text("cancelled_count", "en", count=1)
    [followup] = await discord_fake.wait_for(
        lambda: [c for c in discord_fake.calls_to("POST", rf"/webhooks/{APP_ID}/{second['token']}") if c.status == 200]
    )
    assert followup.json["content"] == text("cancelled", "en")
    await discord_fake.wait_for_call("DELETE", rf"/webhooks/{APP_ID}/{second['token']}/messages/@original")
    assert never_backwards(original_texts(discord_fake, second["token"]))


async def test_cancel_while_running(pipeline, discord_fake, comfy_fake, photo_bytes):
    comfy_fake.delay_s = 3
    interaction = colorize(discord_fake, photo_bytes)
    await discord_fake.push_interaction(interaction)
    running = await wait_original(discord_fake, interaction["token"], 2)
    assert running["content"].startswith("Colorizing")
    assert await press_cancel(discord_fake, interaction, running) == text("cancelled_count", "en", count=1)
    [followup] = await discord_fake.wait_for(
        lambda: [
            c for c in discord_fake.calls_to("POST", rf"/webhooks/{APP_ID}/{interaction['token']}") if c.status == 200
        ]
    )
    assert followup.json["content"] == text("cancelled", "en") and not followup.files
    await discord_fake.wait_for_call("DELETE", rf"/webhooks/{APP_ID}/{interaction['token']}/messages/@original")


async def test_the_place_in_line_counts_down_while_waiting(pipeline, discord_fake, comfy_fake, photo_bytes):
    comfy_fake.delay_s = 0.8
    interactions = [colorize(discord_fake, photo_bytes, user_id=60 + i) for i in range(5)]
    for interaction in interactions:
        await discord_fake.push_interaction(interaction)
    for interaction in interactions:
        await discord_fake.wait_for_call(
            "DELETE", rf"/webhooks/{APP_ID}/{interaction['token']}/messages/@original", timeout=60
        )
    histories = [original_texts(discord_fake, i["token"]) for i in interactions]
    assert all(never_backwards(h) for h in histories), histories
    places = [[int(t.split("#")[1].split()[0]) for t in h if t.startswith("Queued — #")] for h in histories]
    longest = max(places, key=len)
    assert len(longest) >= 2 and longest == sorted(longest, reverse=True) and longest[-1] < longest[0], histories


async def test_where_lists_the_users_photos(pipeline, discord_fake, comfy_fake, photo_bytes):
    comfy_fake.delay_s = 2
    interaction = colorize(discord_fake, photo_bytes)
    await discord_fake.push_interaction(interaction)
    await wait_original(discord_fake, interaction["token"], 1)
    where = discord_fake.slash("where", [])
    await discord_fake.push_interaction(where)
    [answer] = await discord_fake.wait_for_call("POST", rf"/interactions/{where['id']}/.*/callback")
    assert answer.json["data"]["content"].startswith("Photo 1: ")
    assert int(answer.json["data"]["flags"]) & 64  # only the user sees it
