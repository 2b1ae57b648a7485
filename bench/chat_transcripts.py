"""Print what a user sees in each chat flow, with timings: the real Telegram and Discord bots against
the platform fakes, worker + notifier, the ComfyUI fake (1 s per photo) and a private redis-server.

    PYTHONPATH=$PWD python3 -m bench.chat_transcripts [--pictures DIR]

Flows: photo, album, document, over the limit, failure with Retry, Other mode, Compare, cancel, a
Chinese user, admin /stats (Telegram); slash command, context menu of two photos, Cancel (Discord).
With --pictures, the before/after picture and the /stats chart are written there as PNG files.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import io
import tempfile
from pathlib import Path

import yarl
from discord.gateway import DiscordWebSocket
from discord.http import Route
from PIL import Image
from pydantic import SecretStr

from backend.services import Services
from backend.settings import REPO_ROOT, Settings
from bots.discord.app import RepairBot
from bots.discord.sender import build_sender as discord_sender
from bots.telegram.app import build_application, running
from bots.telegram.ratelimit import FloodAwareRateLimiter
from bots.telegram.sender import build_sender as telegram_sender
from tests.fakes.comfyui import FakeComfyUI
from tests.fakes.discord_api import APP_ID, FakeDiscord
from tests.fakes.telegram_api import FakeTelegram
from tests.support.pipeline import running_pipeline
from tests.support.redis_server import RedisServer
from tests.support.transcripts import discord_interaction, telegram_chat
from tests.telegram.conftest import ChatUser

PHOTO = (REPO_ROOT / "tests" / "data" / "photos" / "astronaut_gray.jpg").read_bytes()
ADMIN = 9001


def big_png(size: tuple[int, int]) -> bytes:
    out = io.BytesIO()
    Image.open(io.BytesIO(PHOTO)).convert("L").resize(size).save(out, "PNG")
    return out.getvalue()


def show(title: str, lines: list) -> None:
    print(f"\n=== {title} ===")
    start = lines[0].at if lines else 0
    for line in lines:
        print("  " + line.show(start))


async def settle(fake, chat_id: int, quiet_s: float = 1.5, timeout: float = 40) -> None:
    """Wait until nothing new happened in the chat for `quiet_s`."""
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    seen = -1
    while loop.time() < end:
        count = len(telegram_chat(fake, chat_id))
        if count == seen and count:
            return
        seen = count
        await asyncio.sleep(quiet_s)


async def telegram_flows(settings: Settings, comfy: FakeComfyUI, pictures: Path | None) -> None:
    fake = await FakeTelegram().start()
    tg = settings.model_copy(
        update={
            "telegram_bot_token": SecretStr(fake.token),
            "telegram_api_base": fake.api_base,
            "telegram_file_base": fake.file_base,
            "telegram_admin_ids": [ADMIN],
        }
    )
    services = Services.create(tg)
    app = build_application(tg, services, rate_limiter=FloodAwareRateLimiter(overall_max_rate=0, group_max_rate=0))
    sender = telegram_sender(tg, services.blobs, overall_max_rate=0, group_max_rate=0, progress_every_s=1.0)
    try:
        async with running(app, tg), running_pipeline(tg, {"telegram": sender}):
            ids = iter(range(5001, 5100))

            async def flow(title: str, act, lang: str = "en", quiet_s: float = 1.5) -> ChatUser:
                user = ChatUser(fake, next(ids), lang=lang)
                await act(user)
                await settle(fake, user.id, quiet_s)
                show(title, telegram_chat(fake, user.id))
                return user

            await flow("Telegram: a photo", lambda u: u.send_photo(PHOTO))

            async def album(u: ChatUser) -> None:
                for _ in range(3):
                    await u.send_photo(PHOTO, media_group_id=f"album{u.id}")

            await flow("Telegram: an album of 3", album)
            await flow("Telegram: a photo sent as a file", lambda u: u.send_document(PHOTO, name="scan.jpg"))
            await flow(
                "Telegram: 48 MP, over the 40 MP limit (shrunk)",
                lambda u: u.send_document(big_png((8000, 6000)), mime="image/png", name="huge.png"),
                quiet_s=6,
            )

            async def failure(u: ChatUser) -> None:
                comfy.fail_next_runtime = "CUDA out of memory"
                await u.send_photo(PHOTO)
                await settle(fake, u.id)
                edit = [c for c in fake.calls_to("editMessageText") if int(c["chat_id"]) == u.id][-1]
                retry = edit["reply_markup"]["inline_keyboard"][0][0]["callback_data"]
                await u.press(retry, edit["message_id"])

            await flow("Telegram: a failure, then Retry", failure)

            async def other_and_compare(u: ChatUser) -> None:
                await u.send_photo(PHOTO)
                await settle(fake, u.id)
                [photo] = [c for c in fake.calls_to("sendPhoto") if int(c["chat_id"]) == u.id]
                other, compare = [b["callback_data"] for b in photo["reply_markup"]["inline_keyboard"][0]]
                await u.press(other, photo.result["message_id"])
                await u.press(other, photo.result["message_id"])  # pressed twice: runs once
                await settle(fake, u.id)
                await u.press(compare, photo.result["message_id"])

            user = await flow("Telegram: Other mode (pressed twice), then Compare", other_and_compare)
            if pictures is not None:
                compare = [c for c in fake.calls_to("sendPhoto") if int(c["chat_id"]) == user.id][-1]
                Image.open(io.BytesIO(compare.files["photo"])).save(pictures / "compare.png")

            async def cancel(u: ChatUser) -> None:
                comfy.delay_s = 4
                await u.send_photo(PHOTO)
                await fake.wait_for(lambda: any(t.startswith("Colorizing") for t in u.texts()))
                edit = [c for c in fake.calls_to("editMessageText") if int(c["chat_id"]) == u.id][-1]
                await u.press(edit["reply_markup"]["inline_keyboard"][0][0]["callback_data"], edit["message_id"])

            await flow("Telegram: Cancel while colorizing", cancel)
            comfy.delay_s = 1.0

            async def burst(u: ChatUser) -> None:
                for _ in range(10):
                    await u.send_photo(PHOTO)

            await flow(
                f"Telegram: ten photos at once ({tg.user_max_active} at a time, the rest in the backlog)",
                burst,
                quiet_s=3,
            )

            async def backlog_then_cancel(u: ChatUser) -> None:
                for _ in range(6):
                    await u.send_photo(PHOTO)
                while await services.backlog.room(f"telegram:{u.id}") > tg.user_backlog - 3:
                    await asyncio.sleep(0.05)  # all six taken in: three queued, three in the backlog
                await u.command("/cancel")

            await flow("Telegram: six photos, then /cancel (three of them still in the backlog)", backlog_then_cancel)
            await flow("Telegram: a Chinese user", lambda u: u.send_photo(PHOTO), lang="zh-hans")

            admin = ChatUser(fake, ADMIN)
            await admin.command("/stats")
            await settle(fake, ADMIN)
            show("Telegram: admin /stats", telegram_chat(fake, ADMIN))
            if pictures is not None:
                chart = [c for c in fake.calls_to("sendPhoto") if int(c["chat_id"]) == ADMIN][-1]
                (pictures / "stats.png").write_bytes(chart.files["photo"])
    finally:
        await services.close()
        await fake.stop()


async def discord_flows(settings: Settings, comfy: FakeComfyUI) -> None:
    fake = await FakeDiscord().start()
    Route.BASE = fake.api_base
    DiscordWebSocket.DEFAULT_GATEWAY = yarl.URL(fake.gateway_url)
    dc = settings.model_copy(
        update={
            "discord_bot_token": SecretStr("test-token"),
            "discord_api_base": fake.api_base,
            "discord_gateway_url": fake.gateway_url,
        }
    )
    async with running_pipeline(
        dc, {"discord": discord_sender(dc, Services.create(dc).blobs, progress_every_s=1.0)}
    ) as services:
        bot = RepairBot(services, guild_ready_timeout=0.05)
        runner = asyncio.create_task(bot.start("test-token"))
        while not bot.is_ready():
            if runner.done():
                runner.result()
            await asyncio.sleep(0.05)
        try:
            attachment = fake.add_file(PHOTO, "old.jpg")
            slash = fake.slash(
                "colorize", [{"name": "image", "type": 11, "value": attachment["id"]}], attachments=[attachment]
            )
            await fake.push_interaction(slash)
            await fake.wait_for_call("DELETE", rf"/webhooks/{APP_ID}/{slash['token']}/messages/@original", timeout=40)
            show("Discord: /colorize", discord_interaction(fake, slash["token"]))

            photos = [fake.add_file(PHOTO, f"p{i}.jpg") for i in range(2)]
            menu = fake.message_command("Colorize photo", fake.user_message(photos))
            await fake.push_interaction(menu)
            await fake.wait_for_call("DELETE", rf"/webhooks/{APP_ID}/{menu['token']}/messages/@original", timeout=40)
            show("Discord: Colorize photo on a message with 2 images", discord_interaction(fake, menu["token"]))

            comfy.delay_s = 4
            attachment = fake.add_file(PHOTO, "old.jpg")
            doomed = fake.slash(
                "colorize", [{"name": "image", "type": 11, "value": attachment["id"]}], attachments=[attachment]
            )
            await fake.push_interaction(doomed)
            original = await fake.wait_for(
                lambda: next(
                    (
                        c.json
                        for c in reversed(
                            fake.calls_to("PATCH", rf"/webhooks/{APP_ID}/{doomed['token']}/messages/@original")
                        )
                        if c.json.get("components")
                    ),
                    None,
                )
            )
            cancel = original["components"][0]["components"][0]["custom_id"]
            # The bot's status message as Discord sends it with a press: a whole message, with its buttons.
            status_message = {**fake.user_message([], author_id=int(APP_ID)), "components": original["components"]}
            await fake.push_interaction(fake.button_click(cancel, status_message))
            await fake.wait_for_call("DELETE", rf"/webhooks/{APP_ID}/{doomed['token']}/messages/@original", timeout=40)
            show("Discord: Cancel while queued or colorizing", discord_interaction(fake, doomed["token"]))
        finally:
            await bot.close()
            await runner
            await fake.stop()


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pictures", type=Path, help="write compare.png and stats.png here")
    args = parser.parse_args()
    if args.pictures:
        args.pictures.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as scratch:
        redis = RedisServer(Path(scratch) / "redis").start()
        comfy = FakeComfyUI(delay_s=1.0)
        await comfy.start()
        try:
            settings = Settings(
                _env_file=None,
                redis_url=redis.url,
                comfyui_url=comfy.url,
                blob_dir=Path(scratch) / "blobs",
                var_dir=Path(scratch) / "var",
                block_ms=200,
                min_idle_ms=3000,
                retry_backoff_s=0.05,
                retry_backoff_max_s=0.5,
                status_refresh_s=1.0,
                task_timeout_s=30,
            )
            await telegram_flows(settings, comfy, args.pictures)
            comfy.delay_s = 1.0
            await discord_flows(settings, comfy)
        finally:
            await comfy.stop()
            redis.stop()


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(main())
