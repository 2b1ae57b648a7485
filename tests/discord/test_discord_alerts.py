"""Alerts in the Discord bot: /repairbot mute_alerts for admins, and an interaction that fails is
reported for the admins' alert; the alert itself reaches each admin by direct message."""

from __future__ import annotations

import asyncio

from backend import alerts
from backend.services import Services, make_blob_store
from backend.texts import text
from bots.discord.sender import build_sender
from tests.discord.test_discord_admin import admin_command, answer


async def test_admin_mutes_alerts(bot, discord_fake, redis):
    mute = admin_command(discord_fake, "mute_alerts", options=[{"name": "minutes", "type": 4, "value": 45}])
    await discord_fake.push_interaction(mute)
    assert (await answer(discord_fake, mute)).json["data"]["content"] == text("admin_muted", "en", minutes=45)
    assert 2600 < await alerts.muted_for_s(redis) <= 2700


async def test_a_failed_interaction_is_reported_for_the_admins(discord_settings, discord_fake, redis, start_bot):
    services = Services.create(discord_settings)

    async def broken() -> None:
        raise RuntimeError("boom")

    services.admin.status = broken
    try:
        async with start_bot(discord_settings, services) as bot:
            await discord_fake.push_interaction(admin_command(discord_fake, "queue"))
            for _ in range(200):
                if await alerts.read_bot_errors(redis):
                    break
                await asyncio.sleep(0.05)
            assert await alerts.read_bot_errors(redis) == {"discord": (1, "RuntimeError")}
            bot.command_errors.clear()  # the one failure this test made on purpose
    finally:
        await services.close()


async def test_an_alert_reaches_each_admin_by_direct_message(discord_settings, discord_fake, redis):
    sender = build_sender(discord_settings, make_blob_store(discord_settings, redis))
    await sender.start()
    try:
        assert await sender.send_admin_alert("⚠️ test alert", [4242, 4343]) == 2
    finally:
        await sender.close()
    dm_posts = [
        c
        for c in discord_fake.calls
        if c.method == "POST"
        and "/channels/" in c.path
        and c.path.endswith("/messages")
        and (c.json or {}).get("content") == "⚠️ test alert"
    ]
    assert len(dm_posts) == 2
