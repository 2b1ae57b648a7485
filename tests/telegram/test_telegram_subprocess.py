"""`repairbot telegram` as a real process against the Bot API fake, with worker + notifier in-process."""

from __future__ import annotations

import asyncio
import io
import os
import signal
import sys
from pathlib import Path

from PIL import Image

from backend.redis_conn import connect
from backend.services import make_blob_store
from backend.settings import REPO_ROOT
from bots.telegram.sender import build_sender
from tests.support.pipeline import running_pipeline
from tests.telegram.conftest import ChatUser, telegram_settings


async def test_repairbot_telegram_process_colorizes_a_photo(settings, tg_fake, photo_bytes, tmp_path: Path):
    env = {
        **os.environ,
        "PYTHONPATH": str(REPO_ROOT),
        "PTB_TIMEDELTA": "1",
        "REDIS_URL": settings.redis_url,
        "COMFYUI_URL": ",".join(settings.comfyui_urls),
        "TELEGRAM_BOT_TOKEN": tg_fake.token,
        "TELEGRAM_API_BASE": tg_fake.api_base,
        "TELEGRAM_FILE_BASE": tg_fake.file_base,
        "VAR_DIR": str(tmp_path / "var"),
    }
    env.pop("TELEGRAM_WEBHOOK_URL", None)
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "backend.cli",
        "telegram",
        cwd=tmp_path,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    system_settings = telegram_settings(settings, tg_fake)
    try:
        await tg_fake.wait_call("getUpdates", timeout=30)
        redis = connect(system_settings)
        sender = build_sender(
            system_settings, make_blob_store(system_settings, redis), overall_max_rate=0, group_max_rate=0
        )
        try:
            async with running_pipeline(system_settings, {"telegram": sender}):
                await ChatUser(tg_fake).send_photo(photo_bytes)
                [photo] = await tg_fake.wait_call("sendPhoto", timeout=30)
        finally:
            await redis.aclose()
        r, _, b = Image.open(io.BytesIO(photo.files["photo"])).convert("RGB").resize((8, 8)).getpixel((4, 4))
        assert r > b
        assert tg_fake.calls_to("setMyCommands")
    finally:
        if process.returncode is None:
            process.send_signal(signal.SIGTERM)
        output, _ = await asyncio.wait_for(process.communicate(), timeout=30)
    assert process.returncode == 0, output.decode(errors="replace")
