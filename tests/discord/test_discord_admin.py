"""/repairbot for admins, refused (and logged) for everyone else; commands synced only when changed."""

from __future__ import annotations

import logging

from backend import keys
from backend.texts import text
from tests.fakes.discord_api import APP_ID, FakeDiscord

ADMIN_ID = 4242
EPHEMERAL = 64


def admin_command(
    fake: FakeDiscord, sub: str, *, user_id: int = ADMIN_ID, options: list | None = None, locale: str = "en-US"
) -> dict:
    return fake.slash(
        "repairbot", [{"name": sub, "type": 1, "options": options or []}], user_id=user_id, is_admin=True, locale=locale
    )


async def answer(fake: FakeDiscord, interaction: dict) -> dict:
    [call] = await fake.wait_for_call("POST", rf"/interactions/{interaction['id']}/.*/callback")
    assert call.json["type"] == 4 and int(call.json["data"]["flags"]) & EPHEMERAL
    return call


async def deferred_answer(fake: FakeDiscord, interaction: dict):
    """Slow commands defer (ephemeral, thinking) at once and answer with a follow-up."""
    [callback] = await fake.wait_for_call("POST", rf"/interactions/{interaction['id']}/.*/callback")
    assert callback.json["type"] == 5 and int(callback.json["data"]["flags"]) & EPHEMERAL
    [call] = await fake.wait_for_call("POST", rf"/webhooks/{APP_ID}/{interaction['token']}")
    assert int(call.json["flags"]) & EPHEMERAL
    return call


async def test_admin_sees_the_queue(bot, discord_fake):
    interaction = admin_command(discord_fake, "queue")
    await discord_fake.push_interaction(interaction)
    content = (await deferred_answer(discord_fake, interaction)).json["content"]
    assert content.startswith("```") and "Queued: 0" in content


async def test_admin_texts_follow_the_admins_locale(bot, discord_fake, redis, discord_settings):
    """A Chinese Discord client gets /repairbot queue and dlq in Chinese."""
    interaction = admin_command(discord_fake, "queue", locale="zh-CN")
    await discord_fake.push_interaction(interaction)
    content = (await deferred_answer(discord_fake, interaction)).json["content"]
    assert "排队：0" in content and "Queued" not in content
    await redis.xadd(discord_settings.dead_stream, {"task_id": "deadbeef02", "reason": "broken", "dead_at": "0"})
    listing = admin_command(discord_fake, "dlq", locale="zh-CN")
    await discord_fake.push_interaction(listing)
    shown = (await answer(discord_fake, listing)).json["data"]
    assert "deadbeef02（? UTC）：broken" in shown["content"]
    assert shown["components"][0]["components"][0]["label"] == "重试 deadbeef"


async def test_admin_pauses_and_resumes(bot, discord_fake, redis):
    pause = admin_command(discord_fake, "pause")
    await discord_fake.push_interaction(pause)
    assert (await answer(discord_fake, pause)).json["data"]["content"] == "Paused: no new tasks will start."
    assert await redis.exists(keys.PAUSED)
    resume = admin_command(discord_fake, "resume")
    await discord_fake.push_interaction(resume)
    assert (await answer(discord_fake, resume)).json["data"]["content"] == "Resumed."
    assert not await redis.exists(keys.PAUSED)


async def test_admin_dead_letters_retry_and_purge(bot, discord_fake, redis, discord_settings):
    dlq = admin_command(discord_fake, "dlq")
    await discord_fake.push_interaction(dlq)
    assert (await answer(discord_fake, dlq)).json["data"]["content"] == "No dead letters."
    await redis.xadd(discord_settings.dead_stream, {"task_id": "deadbeef01", "reason": "broken", "dead_at": "0"})
    listing = admin_command(discord_fake, "dlq")
    await discord_fake.push_interaction(listing)
    shown = (await answer(discord_fake, listing)).json["data"]
    assert shown["content"].startswith("```") and "deadbeef01 (? UTC): broken" in shown["content"]
    [[button]] = [row["components"] for row in shown["components"]]
    assert button["label"] == "Retry deadbeef"  # each dead letter carries its Retry
    retry = admin_command(discord_fake, "retry", options=[{"name": "task", "type": 3, "value": "nope-nope"}])
    await discord_fake.push_interaction(retry)
    assert (await answer(discord_fake, retry)).json["data"]["content"] == "No dead letter for nope-nope."
    purge = admin_command(discord_fake, "purge")
    await discord_fake.push_interaction(purge)
    assert (await answer(discord_fake, purge)).json["data"]["content"] == "Purged 1 dead letter."


async def test_admin_stats_come_with_a_chart(bot, discord_fake):
    interaction = admin_command(discord_fake, "stats")
    await discord_fake.push_interaction(interaction)
    call = await deferred_answer(discord_fake, interaction)
    assert "p50" in call.json["content"]
    assert call.files[0].filename == "stats.png" and call.files[0].data.startswith(b"\x89PNG")


async def test_non_admin_is_refused_and_logged(bot, discord_fake, redis, caplog):
    caplog.set_level(logging.WARNING, logger="bots.discord")
    interaction = admin_command(discord_fake, "pause", user_id=42)
    await discord_fake.push_interaction(interaction)
    call = await answer(discord_fake, interaction)
    assert call.json["data"]["content"] == "Sorry, you're not allowed to do that."
    assert not await redis.exists(keys.PAUSED)
    assert any("discord:42" in r.getMessage() and "refused" in r.getMessage() for r in caplog.records)


async def test_admin_group_is_hidden_from_non_administrators(bot, discord_fake):
    [group] = [c for c in discord_fake.commands["global"] if c["name"] == "repairbot"]
    assert int(group["default_member_permissions"]) == 8  # administrator
    names = {c["name"] for c in discord_fake.commands["global"]}
    assert names == {"colorize", "where", "Colorize photo", "repairbot"}


async def test_commands_sync_only_when_changed(discord_settings, discord_fake, start_bot):
    async with start_bot(discord_settings):
        pass
    async with start_bot(discord_settings):
        pass
    assert len(discord_fake.calls_to("PUT", rf"/applications/{APP_ID}/commands")) == 1


async def test_commands_sync_to_configured_guilds(discord_settings, discord_fake, start_bot):
    settings = discord_settings.model_copy(update={"discord_guild_ids": [700, 701]})
    async with start_bot(settings):
        pass
    assert not discord_fake.calls_to("PUT", rf"/applications/{APP_ID}/commands")
    for guild in ("700", "701"):
        [call] = discord_fake.calls_to("PUT", rf"/applications/{APP_ID}/guilds/{guild}/commands")
        assert {c["name"] for c in call.json} == {"colorize", "where", "Colorize photo", "repairbot"}
        colorize = next(c for c in call.json if c["name"] == "colorize")
        assert colorize["description_localizations"]["zh-CN"] == "为黑白老照片上色"  # Chinese clients see Chinese


async def test_moving_to_guild_commands_clears_the_global_ones_once(discord_settings, discord_fake, start_bot):
    async with start_bot(discord_settings):  # first global...
        pass
    guilds = discord_settings.model_copy(update={"discord_guild_ids": [700]})
    for _ in range(2):  # ...then per guild, twice
        async with start_bot(guilds):
            pass
    [first, cleared] = discord_fake.calls_to("PUT", rf"/applications/{APP_ID}/commands")
    assert first.json and cleared.json == []
    assert len(discord_fake.calls_to("PUT", rf"/applications/{APP_ID}/guilds/700/commands")) == 1


async def test_admin_commands_are_described_from_the_catalog_in_both_languages(
    discord_settings, discord_fake, start_bot
):
    async with start_bot(discord_settings):
        pass
    [call] = discord_fake.calls_to("PUT", rf"/applications/{APP_ID}/commands")
    group = next(c for c in call.json if c["name"] == "repairbot")
    assert group["description_localizations"]["zh-CN"] == text("cmd_admin", "zh")
    queue = next(o for o in group["options"] if o["name"] == "queue")
    assert queue["description"] == text("cmd_queue", "en")
    assert queue["description_localizations"]["zh-CN"] == text("cmd_queue", "zh")
    assert {o["name"] for o in group["options"]} == {
        "queue",
        "dlq",
        "retry",
        "purge",
        "pause",
        "resume",
        "stats",
        "mute_alerts",
    }
