"""A full run of `repairbot up` with both bots, JSON logs at DEBUG: no token or secret in any log line,
`task_id` on the lines about a task, and every Redis key a task leaves behind expires."""

from __future__ import annotations

import json
import random
import secrets

from redis.asyncio import Redis

from backend import keys
from tests.fakes.discord_api import APP_ID, FakeDiscord
from tests.fakes.telegram_api import FakeTelegram
from tests.support.ops import Up, clean_env
from tests.telegram.conftest import ChatUser

# Keys that live on by design, each bounded another way: the streams (trimmed by MINID / MAXLEN /
# retention), the recent run times (LTRIM to 100) and the finished-task log (pruned to 24 h).
LASTING = {
    "photo_repair_tasks",
    "photo_repair_results",
    "photo_repair_events",
    "photo_repair_dead",
    keys.RUN_TIMES,
    keys.DONE_LOG,
}
LASTING_PREFIXES = ("repairbot:discord:commands:",)  # which commands the bot synced: one per application


async def test_full_run_logs_no_secret_and_leaves_only_expiring_keys(redis_url, comfy_fake, photo_bytes, tmp_path):
    telegram_token = f"{random.randint(10**8, 10**9)}:{secrets.token_urlsafe(26)}"  # made here, never committed
    discord_token = secrets.token_urlsafe(40)
    webhook_secret = secrets.token_urlsafe(24)
    telegram, discord = await FakeTelegram(token=telegram_token).start(), await FakeDiscord().start()
    env = clean_env(
        REDIS_URL=redis_url,
        COMFYUI_URL=comfy_fake.url,
        LOG_FORMAT="json",
        LOG_LEVEL="DEBUG",
        TELEGRAM_BOT_TOKEN=telegram_token,
        TELEGRAM_API_BASE=telegram.api_base,
        TELEGRAM_FILE_BASE=telegram.file_base,
        TELEGRAM_WEBHOOK_SECRET=webhook_secret,
        DISCORD_BOT_TOKEN=discord_token,
        DISCORD_API_BASE=discord.api_base,
        DISCORD_GATEWAY_URL=discord.gateway_url,
    )
    try:
        async with Up(tmp_path, env) as up:
            await telegram.wait_call("getUpdates", timeout=30)
            await discord.identified.wait()

            await ChatUser(telegram).send_photo(photo_bytes)
            await telegram.wait_call("sendPhoto", timeout=30)  # a small photo comes back as a photo alone
            attachment = discord.add_file(photo_bytes, "astronaut_gray.jpg")
            interaction = discord.slash(
                "colorize", [{"name": "image", "type": 11, "value": attachment["id"]}], attachments=[attachment]
            )
            await discord.push_interaction(interaction)
            await discord.wait_for(
                lambda: [c for c in discord.calls_to("POST", rf"/webhooks/{APP_ID}/{interaction['token']}") if c.files]
            )
        assert up.process.returncode == 0, up.stderr[-3000:]
    finally:
        await telegram.stop()
        await discord.stop()

    lines = [line for line in up.stderr.splitlines() if line.strip()]
    records = [json.loads(line) for line in lines]  # every line is one JSON object
    for secret in (telegram_token, telegram_token.split(":")[1], discord_token, webhook_secret):
        leaks = [line for line in lines if secret in line]
        assert not leaks, leaks[:3]
    assert secret not in up.stdout
    # httpx logs each Telegram request URL at INFO: the line is there, the token is not.
    assert any(r["logger"] == "httpx" and "/bot<token>/" in r["message"] for r in records)
    finished = [r for r in records if r["logger"] == "backend.worker" and " ok: mode " in r["message"]]
    assert len(finished) == 2 and all(r.get("task_id") and r["task_id"] in r["message"] for r in finished)
    delivered = [r for r in records if r["message"].startswith("delivered ok result of")]
    assert {r["logger"] for r in delivered} == {"backend.notifier"} and all(r.get("task_id") for r in delivered)

    redis = Redis.from_url(redis_url)
    try:
        forever = []
        async for key in redis.scan_iter(count=1000):
            name = key.decode()
            if name not in LASTING and not name.startswith(LASTING_PREFIXES) and await redis.ttl(key) < 0:
                forever.append(f"{name} ({(await redis.type(key)).decode()})")
        assert forever == []
        assert await redis.ttl(keys.delivered(finished[0]["task_id"])) > 0
    finally:
        await redis.aclose()
