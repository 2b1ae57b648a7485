"""`repairbot discord` as a real process against the Discord fake: one photo end to end, SIGTERM exits 0."""

from __future__ import annotations

import asyncio
import io
import os
import signal
import sys
from pathlib import Path

from PIL import Image, ImageStat

from backend.services import make_blob_store
from bots.discord.sender import build_sender
from tests.fakes.discord_api import APP_ID
from tests.support.pipeline import running_pipeline

REPO = Path(__file__).resolve().parents[2]


def bot_environment(settings, fake) -> dict[str, str]:
    inherited = {
        k: v for k, v in os.environ.items() if not k.startswith(("DISCORD_", "TELEGRAM_", "REDIS_", "COMFYUI_"))
    }
    return {
        **inherited,
        "PYTHONPATH": str(REPO),
        "REDIS_URL": settings.redis_url,
        "COMFYUI_URL": ",".join(settings.comfyui_url),
        "DISCORD_BOT_TOKEN": "test-token",
        "DISCORD_API_BASE": fake.api_base,
        "DISCORD_GATEWAY_URL": fake.gateway_url,
        "LOG_LEVEL": "INFO",
    }


async def test_repairbot_discord_process_colorizes_one_photo(
    discord_settings, discord_fake, redis, photo_bytes, tmp_path
):
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "backend.cli",
        "discord",
        cwd=tmp_path,
        env=bot_environment(discord_settings, discord_fake),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    try:
        await asyncio.wait_for(discord_fake.identified.wait(), 30)
        sender = build_sender(discord_settings, make_blob_store(discord_settings, redis))
        async with running_pipeline(discord_settings, {"discord": sender}):
            attachment = discord_fake.add_file(photo_bytes, "astronaut_gray.jpg")
            interaction = discord_fake.slash(
                "colorize", [{"name": "image", "type": 11, "value": attachment["id"]}], attachments=[attachment]
            )
            await discord_fake.push_interaction(interaction)
            [followup] = await discord_fake.wait_for(
                lambda: [
                    c for c in discord_fake.calls_to("POST", rf"/webhooks/{APP_ID}/{interaction['token']}") if c.files
                ]
            )
        [queued] = discord_fake.calls_to("PATCH", rf"/webhooks/{APP_ID}/{interaction['token']}/messages/@original")[:1]
        assert queued.json["content"].startswith("Queued — #1 in line")
        red, _, blue = ImageStat.Stat(Image.open(io.BytesIO(followup.files[0].data)).convert("RGB")).mean
        assert red > blue  # the ComfyUI fake's tint: it went through the worker
    finally:
        if process.returncode is None:
            process.send_signal(signal.SIGTERM)
        output, _ = await asyncio.wait_for(process.communicate(), 30)
    log = output.decode(errors="replace")
    assert process.returncode == 0, log[-3000:]
    assert "Traceback" not in log, log[-3000:]
    assert discord_fake.calls_to("PUT", rf"/applications/{APP_ID}/commands")
