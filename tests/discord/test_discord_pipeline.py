"""The whole way: Discord interaction -> intake -> worker -> ComfyUI fake -> notifier -> Discord sender.

The ComfyUI fake tints grey input, so a colorized result has more red than blue.
"""

from __future__ import annotations

import io

import pytest
from PIL import Image, ImageStat

from backend.services import make_blob_store
from backend.texts import text
from bots.discord import replies
from bots.discord.sender import build_sender
from tests.fakes.discord_api import APP_ID, FakeDiscord
from tests.support.pipeline import running_pipeline
from tests.support.transcripts import never_backwards

CHANNEL_ID = 500


def red_over_blue(data: bytes) -> bool:
    red, _, blue = ImageStat.Stat(Image.open(io.BytesIO(data)).convert("RGB")).mean
    return red > blue


def colorize(fake: FakeDiscord, photo: bytes, **kw) -> dict:
    attachment = fake.add_file(photo, "astronaut_gray.jpg")
    options = [{"name": "image", "type": 11, "value": attachment["id"]}, {"name": "mode", "type": 3, "value": "person"}]
    return fake.slash("colorize", options, attachments=[attachment], **kw)


@pytest.fixture
async def pipeline(discord_settings, redis, start_bot):
    sender = build_sender(discord_settings, make_blob_store(discord_settings, redis))
    async with running_pipeline(discord_settings, {"discord": sender}) as services:
        async with start_bot(discord_settings, services) as bot:
            yield bot


async def followups_with_files(fake: FakeDiscord, token: str, count: int = 1):
    return await fake.wait_for(
        lambda: (
            len(
                found := [
                    c for c in fake.calls_to("POST", rf"/webhooks/{APP_ID}/{token}") if c.files and c.status == 200
                ]
            )
            >= count
            and found
        )
    )


async def test_slash_command_result_arrives_colorized_and_buttons_work(pipeline, discord_fake, photo_bytes):
    interaction = colorize(discord_fake, photo_bytes)
    await discord_fake.push_interaction(interaction)
    [followup] = await followups_with_files(discord_fake, interaction["token"])
    assert red_over_blue(followup.files[0].data)
    assert "person" in followup.json["embeds"][0]["description"]
    edits = [
        c.json["content"]
        for c in discord_fake.calls_to("PATCH", rf"/webhooks/{APP_ID}/{interaction['token']}/messages/@original")
    ]
    # "Queued" first, unless the worker started before that edit went out (the status only moves forward);
    # none at all when the result got there first (on a loaded machine, tests in parallel)
    assert not edits or edits[0].startswith(("Queued — #1 in line", "Colorizing")), edits
    assert never_backwards(edits), edits
    [other, compare] = followup.json["components"][0]["components"]
    result_message = discord_fake.messages[next(reversed(discord_fake.messages))]

    press = discord_fake.button_click(compare["custom_id"], result_message)
    await discord_fake.push_interaction(press)
    [shown] = await discord_fake.wait_for_call("PATCH", rf"/webhooks/{APP_ID}/{press['token']}/messages/@original")
    assert shown.json["content"] == "Before / after" and shown.files[0].filename == "compare.jpg"
    width, height = Image.open(io.BytesIO(shown.files[0].data)).size
    assert width > height  # two images side by side

    press = discord_fake.button_click(other["custom_id"], result_message)
    await discord_fake.push_interaction(press)
    [again] = await followups_with_files(discord_fake, press["token"])
    assert "building" in again.json["embeds"][0]["description"] and red_over_blue(again.files[0].data)


async def test_other_mode_is_only_for_the_owner(pipeline, discord_fake, photo_bytes):
    interaction = colorize(discord_fake, photo_bytes)
    await discord_fake.push_interaction(interaction)
    [followup] = await followups_with_files(discord_fake, interaction["token"])
    other = followup.json["components"][0]["components"][0]
    press = discord_fake.button_click(
        other["custom_id"], discord_fake.messages[next(reversed(discord_fake.messages))], user_id=99
    )
    await discord_fake.push_interaction(press)
    [refusal] = await discord_fake.wait_for_call("POST", rf"/interactions/{press['id']}/.*/callback")
    assert refusal.json["data"]["content"] == text("not_yours", "en")  # with a hint to run /colorize
    assert int(refusal.json["data"]["flags"]) & 64


async def test_context_menu_results_arrive_for_each_image(pipeline, discord_fake, photo_bytes):
    photos = [discord_fake.add_file(photo_bytes, f"p{i}.jpg") for i in range(2)]
    interaction = discord_fake.message_command("Colorize photo", discord_fake.user_message(photos))
    await discord_fake.push_interaction(interaction)
    [followup] = await followups_with_files(discord_fake, interaction["token"])  # one follow-up for both
    assert [f.filename for f in followup.files] == ["colorized-1.png", "colorized-2.png"]
    assert all(red_over_blue(f.data) for f in followup.files)
    [embed] = followup.json["embeds"]
    assert embed["description"].startswith("2 photos colorized (person)")
    labels = [b["label"] for row in followup.json["components"] for b in row["components"]]
    assert labels == ["1: Try building", "1: Compare", "2: Try building", "2: Compare"]
    await discord_fake.wait_for_call("DELETE", rf"/webhooks/{APP_ID}/{interaction['token']}/messages/@original")


@pytest.fixture
def tokens_expire_at_once(monkeypatch):
    """Replies carry a token_expires_at of "now": the result comes after the token, as after 15 minutes."""
    monkeypatch.setattr(replies, "TOKEN_LIFETIME_S", replies.TOKEN_MARGIN_S)


async def test_expired_token_result_goes_to_the_channel_mentioning_the_user(
    pipeline, discord_fake, photo_bytes, tokens_expire_at_once
):
    interaction = colorize(discord_fake, photo_bytes)
    await discord_fake.push_interaction(interaction)
    [message] = await discord_fake.wait_for(
        lambda: [c for c in discord_fake.calls_to("POST", rf"/channels/{CHANNEL_ID}/messages") if c.files]
    )
    assert message.json["content"] == "<@42>" and red_over_blue(message.files[0].data)
    assert not [c for c in discord_fake.calls_to("POST", rf"/webhooks/{APP_ID}/.*") if c.files]


async def test_expired_token_and_unwritable_channel_result_goes_to_dm(
    pipeline, discord_fake, photo_bytes, tokens_expire_at_once
):
    discord_fake.forbid_channel(CHANNEL_ID, 50001)
    interaction = colorize(discord_fake, photo_bytes)
    await discord_fake.push_interaction(interaction)
    [dm] = await discord_fake.wait_for(
        lambda: [
            c
            for c in discord_fake.calls
            if c.method == "POST"
            and c.files
            and c.path.removeprefix("/channels/").removesuffix("/messages") in discord_fake.dm_channels
        ]
    )
    assert red_over_blue(dm.files[0].data)


async def test_rate_limited_followup_is_retried(pipeline, discord_fake, photo_bytes):
    interaction = colorize(discord_fake, photo_bytes)
    discord_fake.rate_limit("POST", rf"/webhooks/{APP_ID}/{interaction['token']}", retry_after=0.3)
    await discord_fake.push_interaction(interaction)
    await followups_with_files(discord_fake, interaction["token"])
    statuses = [c.status for c in discord_fake.calls_to("POST", rf"/webhooks/{APP_ID}/{interaction['token']}")]
    assert statuses == [429, 200]
