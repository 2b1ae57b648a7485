"""The bot's gateway session against the fake: heartbeats are acknowledged, a RECONNECT resumes the session."""

from __future__ import annotations

from tests.fakes.discord_api import APP_ID


async def test_bot_resumes_after_reconnect_and_still_answers(bot, discord_fake, photo_bytes):
    assert discord_fake.identifies == 1 and discord_fake.heartbeats >= 1
    await discord_fake.request_reconnect()
    await discord_fake.wait_for(lambda: discord_fake.resumes == 1)
    assert discord_fake.identifies == 1  # the same session, not a new login
    attachment = discord_fake.add_file(photo_bytes)
    interaction = discord_fake.slash(
        "colorize", [{"name": "image", "type": 11, "value": attachment["id"]}], attachments=[attachment]
    )
    await discord_fake.push_interaction(interaction)
    [edit] = await discord_fake.wait_for_call("PATCH", rf"/webhooks/{APP_ID}/{interaction['token']}/messages/@original")
    assert edit.json["content"].startswith("Queued")
