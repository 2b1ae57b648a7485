"""The whole system as one process: `repairbot up` with both bots enabled, against the Telegram and
Discord fakes and the ComfyUI fake; a photo from each chat comes back colorized, SIGTERM exits 0."""

from __future__ import annotations

import asyncio
import io
import os
import signal

from PIL import Image, ImageStat

from backend.settings import REPO_ROOT
from tests.e2e.test_up_comfyui import start_up
from tests.fakes.discord_api import APP_ID, FakeDiscord
from tests.fakes.telegram_api import FakeTelegram
from tests.telegram.conftest import ChatUser


def tinted(data: bytes) -> bool:
    red, _, blue = ImageStat.Stat(Image.open(io.BytesIO(data)).convert("RGB")).mean
    return red > blue


async def test_up_serves_telegram_and_discord_in_one_process(redis_url, comfy_fake, photo_bytes, tmp_path):
    telegram, discord = await FakeTelegram().start(), await FakeDiscord().start()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TELEGRAM_", "DISCORD_", "REDIS_", "COMFYUI_"))}
    env.update(
        PYTHONPATH=str(REPO_ROOT),
        REDIS_URL=redis_url,
        COMFYUI_URL=comfy_fake.url,
        BLOCK_MS="200",
        TELEGRAM_BOT_TOKEN=telegram.token,
        TELEGRAM_API_BASE=telegram.api_base,
        TELEGRAM_FILE_BASE=telegram.file_base,
        DISCORD_BOT_TOKEN="test-token",
        DISCORD_API_BASE=discord.api_base,
        DISCORD_GATEWAY_URL=discord.gateway_url,
    )
    process = await start_up(env, tmp_path)
    try:
        await telegram.wait_call("getUpdates", timeout=30)
        await asyncio.wait_for(discord.identified.wait(), 30)

        await ChatUser(telegram).send_photo(photo_bytes)
        [photo] = await telegram.wait_call("sendPhoto", timeout=30)  # a small photo comes back as a photo alone
        assert tinted(photo.files["photo"])

        attachment = discord.add_file(photo_bytes, "astronaut_gray.jpg")
        interaction = discord.slash(
            "colorize", [{"name": "image", "type": 11, "value": attachment["id"]}], attachments=[attachment]
        )
        await discord.push_interaction(interaction)
        [followup] = await discord.wait_for(
            lambda: [c for c in discord.calls_to("POST", rf"/webhooks/{APP_ID}/{interaction['token']}") if c.files]
        )
        assert tinted(followup.files[0].data)
    finally:
        if process.returncode is None:
            process.send_signal(signal.SIGTERM)
        output, _ = await asyncio.wait_for(process.communicate(), 60)
        await telegram.stop()
        await discord.stop()
    log = output.decode(errors="replace")
    assert process.returncode == 0, log[-3000:]
    assert "bots enabled: telegram, discord" in log
    assert "Traceback" not in log, log[-3000:]
    assert telegram.token not in log  # the bot token never reaches the logs


async def test_up_starts_a_bot_again_when_its_platform_was_unreachable(redis_url, comfy_fake, photo_bytes, tmp_path):
    from tests.support.redis_server import free_port

    telegram = FakeTelegram(port=free_port())  # not listening yet: Telegram is "down" when up starts
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TELEGRAM_", "DISCORD_", "REDIS_", "COMFYUI_"))}
    env.update(
        PYTHONPATH=str(REPO_ROOT),
        REDIS_URL=redis_url,
        COMFYUI_URL=comfy_fake.url,
        BLOCK_MS="200",
        TELEGRAM_BOT_TOKEN=telegram.token,
        TELEGRAM_API_BASE=telegram.api_base,
        TELEGRAM_FILE_BASE=telegram.file_base,
    )
    process = await start_up(env, tmp_path)
    lines: list[str] = []

    async def read_output() -> None:
        assert process.stdout is not None
        async for line in process.stdout:
            lines.append(line.decode(errors="replace"))

    reader = asyncio.create_task(read_output())
    try:
        # The first start fails (however long up takes to get there); up keeps running and tries again.
        for _ in range(600):
            if any("telegram bot stopped with an error; starting it again" in line for line in lines):
                break
            assert process.returncode is None, "".join(lines)[-3000:]
            await asyncio.sleep(0.1)
        await telegram.start()
        await telegram.wait_call("getUpdates", timeout=30)
        await ChatUser(telegram).send_photo(photo_bytes)
        [photo] = await telegram.wait_call("sendPhoto", timeout=30)  # a small photo comes back as a photo alone
        assert tinted(photo.files["photo"])
    finally:
        if process.returncode is None:
            process.send_signal(signal.SIGTERM)
        await asyncio.wait_for(process.wait(), 60)
        await asyncio.wait_for(reader, 10)
        await telegram.stop()
    log = "".join(lines)
    assert process.returncode == 0, log[-3000:]
    assert "telegram bot stopped with an error; starting it again" in log
    assert telegram.token not in log
