"""The Discord sender on its own: Result and Event records in, REST calls to the fake out."""

from __future__ import annotations

import io
import time

import pytest
from PIL import Image

from backend.blobs import RedisBlobStore
from backend.notifier import SendPermanent, SendRetry
from backend.replies import DiscordReply, TelegramReply
from backend.tasks import Event, Result
from bots.discord.sender import build_sender
from tests.fakes.discord_api import APP_ID, FakeDiscord

TASK_ID = "a1b2c3d4e5f6a7b8"
CHANNEL_ID = 500
USER_ID = 42


def reply(token: str = "itok-1", *, alive: bool = True, **extra) -> DiscordReply:
    fields = {
        "application_id": APP_ID,
        "interaction_token": token,
        "token_expires_at": time.time() + (600 if alive else -1),
        "channel_id": str(CHANNEL_ID),
        "user_id": str(USER_ID),
        "guild_id": "700",
        "lang": "en",
        "private": False,
    }
    return DiscordReply(**(fields | extra))


def png(size=(64, 48), colour=(200, 120, 60)) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", size, colour).save(out, "PNG")
    return out.getvalue()


@pytest.fixture
async def blobs(redis):
    return RedisBlobStore(redis)


@pytest.fixture
async def sender(discord_settings, blobs):
    sender = build_sender(discord_settings, blobs)
    await sender.start()
    yield sender
    await sender.close()


async def ok_result(blobs, data: bytes, **reply_kw) -> Result:
    output = await blobs.put("out", data)
    return Result(
        task_id=TASK_ID,
        status="ok",
        reply=reply(**reply_kw),
        mode="person",
        output=output,
        user=f"discord:{USER_ID}",
        run_ms=2500,
    )


async def test_result_is_a_followup_with_the_image_embed_and_buttons(sender, blobs, discord_fake: FakeDiscord):
    image = png()
    await sender.send_result(await ok_result(blobs, image))
    [call] = discord_fake.calls_to("POST", rf"/webhooks/{APP_ID}/itok-1")
    assert call.files[0].data == image and call.files[0].filename == "colorized.png"
    embed = call.json["embeds"][0]
    assert "person" in embed["description"] and "2.5" in embed["description"]
    assert embed["image"]["url"] == "attachment://colorized.png"
    buttons = call.json["components"][0]["components"]
    assert [b["custom_id"] for b in buttons] == [f"repairbot:other:{TASK_ID}:building", f"repairbot:compare:{TASK_ID}"]
    assert [b["label"] for b in buttons] == ["Try building", "Compare"]
    assert not int(call.json.get("flags") or 0) & 64
    assert not sender.client._connection._view_store._views  # no View kept per result in a long-lived notifier


async def test_private_result_is_an_ephemeral_followup(sender, blobs, discord_fake: FakeDiscord):
    await sender.send_result(await ok_result(blobs, png(), private=True))
    [call] = discord_fake.calls_to("POST", rf"/webhooks/{APP_ID}/itok-1")
    assert int(call.json["flags"]) & 64


async def test_expired_token_falls_back_to_a_channel_message_mentioning_the_user(sender, blobs, discord_fake):
    image = png()
    await sender.send_result(await ok_result(blobs, image, alive=False))
    assert not discord_fake.calls_to("POST", r"/webhooks/.*")
    [call] = discord_fake.calls_to("POST", rf"/channels/{CHANNEL_ID}/messages")
    assert call.json["content"] == f"<@{USER_ID}>"
    assert call.json["allowed_mentions"]["users"] == [str(USER_ID)] or call.json["allowed_mentions"]["users"] == [
        USER_ID
    ]
    assert call.files[0].data == image


async def test_token_that_died_early_still_falls_back_to_the_channel(sender, blobs, discord_fake):
    discord_fake.expire_token("itok-1")
    await sender.send_result(await ok_result(blobs, png()))
    [webhook] = discord_fake.calls_to("POST", rf"/webhooks/{APP_ID}/itok-1")
    assert (webhook.status, webhook.code) == (401, 50027)  # what Discord answers for an expired token
    [call] = discord_fake.calls_to("POST", rf"/channels/{CHANNEL_ID}/messages")
    assert call.status == 200 and call.files


@pytest.mark.parametrize("code", [50013, 50001])
async def test_unwritable_channel_gets_a_dm_instead(sender, blobs, discord_fake, code):
    discord_fake.forbid_channel(CHANNEL_ID, code)
    image = png()
    await sender.send_result(await ok_result(blobs, image, alive=False))
    [opened] = discord_fake.calls_to("POST", r"/users/@me/channels")
    assert opened.json["recipient_id"] in (USER_ID, str(USER_ID))
    dm_channel = next(cid for cid, uid in discord_fake.dm_channels.items() if uid == str(USER_ID))
    [dm] = discord_fake.calls_to("POST", rf"/channels/{dm_channel}/messages")
    assert dm.files[0].data == image


async def test_private_request_after_expiry_goes_to_dm_not_the_channel(sender, blobs, discord_fake):
    await sender.send_result(await ok_result(blobs, png(), alive=False, private=True))
    assert not discord_fake.calls_to("POST", rf"/channels/{CHANNEL_ID}/messages")
    assert discord_fake.calls_to("POST", r"/users/@me/channels")


async def test_unreachable_user_is_a_permanent_failure(sender, blobs, discord_fake):
    discord_fake.forbid_channel(CHANNEL_ID)
    discord_fake.block_dm(USER_ID)
    with pytest.raises(SendPermanent):
        await sender.send_result(await ok_result(blobs, png(), alive=False))


async def test_rate_limit_on_followup_is_honoured(sender, blobs, discord_fake):
    discord_fake.rate_limit("POST", rf"/webhooks/{APP_ID}/itok-1", retry_after=0.2)
    await sender.send_result(await ok_result(blobs, png()))
    calls = discord_fake.calls_to("POST", rf"/webhooks/{APP_ID}/itok-1")
    assert [c.status for c in calls] == [429, 200]
    assert calls[1].files


async def test_rate_limit_on_channel_message_is_honoured(sender, blobs, discord_fake):
    discord_fake.rate_limit("POST", rf"/channels/{CHANNEL_ID}/messages", retry_after=0.2)
    await sender.send_result(await ok_result(blobs, png(), alive=False))
    assert [c.status for c in discord_fake.calls_to("POST", rf"/channels/{CHANNEL_ID}/messages")] == [429, 200]


async def test_oversized_result_goes_as_a_downscaled_jpeg_with_a_note(sender, blobs, discord_fake):
    noisy = Image.effect_noise((900, 900), 90).convert("RGB")
    out = io.BytesIO()
    noisy.save(out, "PNG")
    big = out.getvalue()
    limit = len(big) // 3
    await sender.send_result(await ok_result(blobs, big, upload_limit=limit))
    [call] = discord_fake.calls_to("POST", rf"/webhooks/{APP_ID}/itok-1")
    upload = call.files[0]
    assert upload.filename == "colorized.jpg" and len(upload.data) <= limit
    assert upload.data[:3] == b"\xff\xd8\xff"
    assert call.json["embeds"][0]["footer"]["text"].startswith("The full image was too large")


async def test_failed_task_tells_the_user_why(sender, discord_fake):
    result = Result(task_id=TASK_ID, status="failed", reply=reply(lang="zh"), mode="person", error="timeout")
    await sender.send_result(result)
    [call] = discord_fake.calls_to("POST", rf"/webhooks/{APP_ID}/itok-1")
    assert call.json["content"] == "抱歉，这张照片处理时间过长。请稍后再试。"
    assert not call.files


async def test_progress_edits_the_original_response_and_is_throttled(discord_settings, blobs, discord_fake):
    now = [100.0]
    sender = build_sender(discord_settings, blobs)
    sender.clock = lambda: now[0]
    discord_fake.deferred("itok-1")
    await sender.start()
    try:
        r = reply()
        await sender.send_event(Event(TASK_ID, "queued", r, position=3, eta_s=9))
        await sender.send_event(Event(TASK_ID, "queued", r, position=2, eta_s=6))  # dropped: too soon
        await sender.send_event(Event(TASK_ID, "started", r))  # a new stage shows at once
        await sender.send_event(Event(TASK_ID, "queued", r, position=1, eta_s=3))  # never backwards
        await sender.send_event(Event(TASK_ID, "progress", r, percent=10))  # the same text: not sent
        now[0] += 10
        await sender.send_event(Event(TASK_ID, "progress", reply(alive=False), percent=90))  # token gone
    finally:
        await sender.close()
    edits = discord_fake.calls_to("PATCH", rf"/webhooks/{APP_ID}/itok-1/messages/@original")
    assert [e.json["content"] for e in edits] == ["Queued — #3 in line, about 9 s.", "Colorizing…"]
    assert [b["label"] for b in edits[-1].json["components"][0]["components"]] == ["Cancel"]


async def test_network_failure_is_worth_retrying(discord_settings, blobs, discord_fake):
    sender = build_sender(discord_settings, blobs)
    await sender.start()
    try:
        await discord_fake.stop()
        with pytest.raises(SendRetry):
            await sender.send_result(await ok_result(blobs, png(), alive=False))
    finally:
        await sender.close()


async def test_channel_fallback_uploads_within_the_standard_limit(sender, blobs, discord_fake, monkeypatch):
    """A boosted guild lets the interaction upload more than a bot's channel message may carry (413)."""
    noisy = Image.effect_noise((300, 300), 90).convert("RGB")
    out = io.BytesIO()
    noisy.save(out, "PNG")
    big = out.getvalue()
    standard = len(big) // 2  # stands in for the 10 MiB outside interactions, kept small for speed
    monkeypatch.setattr("bots.discord.sender.DEFAULT_UPLOAD_LIMIT", standard)
    discord_fake.channel_upload_limit = standard
    discord_fake.expire_token("itok-1")
    await sender.send_result(await ok_result(blobs, big, upload_limit=len(big) * 2))
    [followup] = discord_fake.calls_to("POST", rf"/webhooks/{APP_ID}/itok-1")
    assert followup.files[0].data == big and followup.code == 50027
    [call] = discord_fake.calls_to("POST", rf"/channels/{CHANNEL_ID}/messages")
    assert call.status == 200 and len(call.files[0].data) <= standard
    assert not discord_fake.refusals(40005)


async def test_every_sender_request_on_a_bot_route_carries_the_bot_token(sender, blobs, discord_fake):
    await sender.send_result(await ok_result(blobs, png(), alive=False))
    assert discord_fake.calls_to("GET", "/users/@me") and discord_fake.calls_to(
        "POST", rf"/channels/{CHANNEL_ID}/messages"
    )
    assert all(call.status < 400 for call in discord_fake.calls)


async def test_progress_of_one_photo_among_several_says_which_one(discord_settings, blobs, discord_fake):
    sender = build_sender(discord_settings, blobs)
    discord_fake.deferred("itok-1")
    await sender.start()
    try:
        await sender.send_event(Event(TASK_ID, "progress", reply(part="2/3", lang="zh"), percent=40))
    finally:
        await sender.close()
    [edit] = discord_fake.calls_to("PATCH", rf"/webhooks/{APP_ID}/itok-1/messages/@original")
    assert edit.json["content"] == "第 2/3 张：正在上色…"


async def test_a_restarted_sender_does_not_post_a_result_discord_took(discord_settings, blobs, discord_fake, redis):
    from backend import keys

    result = await ok_result(blobs, png())
    first = build_sender(discord_settings, blobs)
    await first.start()
    await first.send_result(result)  # the notifier is killed before it marks the result delivered
    await first.close()
    assert (await redis.hgetall(keys.send_parts(TASK_ID)))[b"result"] == b"sent"
    restarted = build_sender(discord_settings, blobs)
    await restarted.start()
    await restarted.send_result(result)
    await restarted.close()
    assert len(discord_fake.calls_to("POST", rf"/webhooks/{APP_ID}/itok-1")) == 1


async def test_another_platform_s_reply_channel_is_refused_without_a_request(sender, discord_fake):
    stray = TelegramReply(chat_id=42, status_message_id=7)
    with pytest.raises(SendPermanent, match="telegram reply channel"):
        await sender.send_result(Result(task_id=TASK_ID, status="failed", reply=stray, error="timeout"))
    with pytest.raises(SendPermanent, match="telegram reply channel"):
        await sender.send_event(Event(TASK_ID, "started", stray))
    assert not discord_fake.calls_to("POST", r"/webhooks/.*") and not discord_fake.calls_to("POST", r"/channels/.*")
