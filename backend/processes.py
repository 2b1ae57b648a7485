"""What each long-running `repairbot` command runs: the worker, the notifier, one bot, or all of them
(`up`). The composition root: Settings are read here and handed to the parts they configure."""

from __future__ import annotations

import asyncio
import functools
import importlib
import sys
from typing import Any

from backend.redact import redact_url
from backend.services import Services
from backend.settings import Settings
from backend.supervision import logged, restarting, serve, with_ops

EXIT_OK, EXIT_ERROR = 0, 1
BOTS = ("telegram", "discord")


def bot_token_set(settings: Settings, platform: str) -> bool:
    return getattr(settings, f"{platform}_bot_token") is not None


def bot_module(platform: str, name: str) -> Any:
    """Bots are imported only when used: the backend itself never imports a platform library."""
    return importlib.import_module(f"bots.{platform}.{name}")


def build_senders(settings: Settings, services: Services) -> dict[str, Any]:
    return {
        platform: bot_module(platform, "sender").build_sender(settings, services.blobs)
        for platform in BOTS
        if bot_token_set(settings, platform)
    }


async def run_worker(settings: Settings, stop: asyncio.Event) -> int:
    from backend.ops import Ops
    from backend.worker import Worker

    async with Services.open(settings) as services:
        worker = Worker(services.redis, settings, blobs=services.blobs, workflows=services.workflows)
        ops = Ops(services.redis, settings, worker=worker, blobs=services.blobs, modes=services.workflows.names)
        await with_ops(ops, serve(worker, stop))
    return EXIT_OK


async def run_notifier(settings: Settings, stop: asyncio.Event) -> int:
    from backend.notifier import Notifier
    from backend.ops import Ops

    async with Services.open(settings) as services:
        notifier = Notifier(services.redis, settings, build_senders(settings, services))
        ops = Ops(services.redis, settings, deliver=notifier.alert_admins, modes=services.workflows.names)
        await with_ops(ops, serve(notifier, stop))
    return EXIT_OK


async def run_bot(settings: Settings, platform: str, stop: asyncio.Event) -> int:
    if not bot_token_set(settings, platform):
        print(f"{platform.upper()}_BOT_TOKEN is not set: put it in the environment or .env", file=sys.stderr)
        return EXIT_ERROR
    from backend.ops import Ops

    async with Services.open(settings) as services:  # the bot's own parts are its business; ops needs Redis
        ops = Ops(services.redis, settings, modes=services.workflows.names)
        await with_ops(ops, bot_module(platform, "app").serve(settings, stop))
    return EXIT_OK


async def run_up(settings: Settings, stop: asyncio.Event, *, install_comfyui: bool = False) -> int:
    """Worker, notifier and every bot whose token is set in one process; a private Redis and the
    installed ComfyUI too when none is configured and nothing answers on the usual port."""
    from backend.embedded_redis import port_open, start_embedded_redis
    from backend.notifier import Notifier
    from backend.ops import Ops
    from backend.worker import Worker

    redis_child = None
    if "redis_url" not in settings.model_fields_set and not port_open("127.0.0.1", 6379):
        redis_child = start_embedded_redis(settings)
        if redis_child is None:
            return EXIT_ERROR
        settings = settings.model_copy(update={"redis_url": redis_child.url})
    comfy_child = None
    if "comfyui_url" not in settings.model_fields_set:
        from backend import comfyui_supervisor

        settings = settings.model_copy(update={"comfyui_url": [f"http://127.0.0.1:{settings.comfyui_port}"]})
        if not port_open("127.0.0.1", settings.comfyui_port):
            comfy_child = await comfyui_supervisor.for_up(
                settings, allow_install=install_comfyui or settings.comfyui_auto_install
            )
    bots = [p for p in BOTS if bot_token_set(settings, p)]
    print(
        f"repairbot up: Redis {redact_url(settings.redis_url)}, "
        f"ComfyUI {', '.join(redact_url(url) for url in settings.comfyui_urls)}"
    )
    print(f"bots enabled: {', '.join(bots) or 'none (set TELEGRAM_BOT_TOKEN or DISCORD_BOT_TOKEN)'}")
    print("try it without chat:  repairbot submit photo.jpg --wait --out colorized.png", flush=True)
    try:
        async with Services.open(settings) as services:
            worker = Worker(services.redis, settings, blobs=services.blobs, workflows=services.workflows)
            notifier = Notifier(services.redis, settings, build_senders(settings, services))
            ops = Ops(
                services.redis,
                settings,
                worker=worker,
                deliver=notifier.alert_admins,
                blobs=services.blobs,
                modes=services.workflows.names,
            )
            parts = [logged("worker", serve(worker, stop)), logged("notifier", serve(notifier, stop))]
            parts += [restarting(p, functools.partial(bot_module(p, "app").serve, settings, stop), stop) for p in bots]
            if comfy_child is not None:
                parts.append(logged("comfyui", comfy_child.supervise(stop)))
            await with_ops(ops, asyncio.gather(*parts))
    finally:
        if comfy_child is not None:
            await asyncio.to_thread(comfy_child.terminate)
        if redis_child is not None:
            redis_child.stop()
    return EXIT_OK
