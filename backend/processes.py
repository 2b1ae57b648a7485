"""What each long-running `repairbot` command runs: the worker, the notifier, one bot, or all of them
(`up`). The composition root: Settings are read here and handed to the parts they configure."""

from __future__ import annotations

import asyncio
import functools
import importlib
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from backend.redact import redact_url
from backend.services import Services, make_blob_store, stream_names
from backend.settings import Settings
from backend.supervision import logged, restarting, serve, with_ops

if TYPE_CHECKING:  # imported when built: each command loads only the parts it runs
    from redis.asyncio import Redis

    from backend.alerts import Deliver
    from backend.blobs import BlobStore
    from backend.executors import ComfyUI, Executor
    from backend.notifier import Notifier, Sender
    from backend.ops import Ops
    from backend.streams import ConsumerOptions
    from backend.worker import Worker
    from backend.workflows import Workflows

EXIT_OK, EXIT_ERROR = 0, 1
BOTS = ("telegram", "discord")


def bot_token_set(settings: Settings, platform: str) -> bool:
    return getattr(settings, f"{platform}_bot_token") is not None


def bot_module(platform: str, name: str) -> Any:
    """Bots are imported only when used: the backend itself never imports a platform library."""
    return importlib.import_module(f"bots.{platform}.{name}")


def consumer_options(settings: Settings) -> ConsumerOptions:
    """How the worker and the notifier read their groups, keep their entries and back off."""
    from backend.streams import ConsumerOptions

    return ConsumerOptions(
        dead_stream=settings.dead_stream,
        block_ms=settings.block_ms,
        call_timeout_s=settings.redis_socket_timeout_s,
        lease_s=settings.consumer_lease_s,
        min_idle_ms=settings.min_idle_ms,
        read_batch=settings.read_batch,
        shutdown_grace_s=settings.shutdown_grace_s,
        retry_backoff_s=settings.retry_backoff_s,
        retry_backoff_max_s=settings.retry_backoff_max_s,
    )


def build_worker(
    settings: Settings,
    redis: Redis,
    *,
    blobs: BlobStore | None = None,
    workflows: Workflows | None = None,
    executor: Executor | None = None,
    clients: list[ComfyUI] | None = None,
) -> Worker:
    """The worker as Settings configure it.

    :param blobs: where inputs are read and outputs written (default: per settings)
    :param workflows: the modes (default: loaded from settings.workflows_dir)
    :param executor: what runs the tasks (default: the one `settings.executor` names)
    :param clients: ComfyUI clients to use instead of one per configured URL (tests)
    """
    from backend.worker import Worker
    from backend.workflows import Workflows

    store = blobs or make_blob_store(settings, redis)

    def make(on_capacity: Callable[[], None]) -> Executor:
        return executor or build_executor(settings, redis, store, clients=clients, on_capacity=on_capacity)

    return Worker(
        redis,
        executor=make,
        executor_name=settings.executor,
        workflows=workflows or Workflows.load(settings.workflows_dir),
        tasks_stream=settings.tasks_stream,
        results_stream=settings.results_stream,
        group=settings.workers_group,
        max_deliveries=settings.max_deliveries,
        result_ttl_s=settings.blob_ttl_s,
        options=consumer_options(settings),
    )


def build_executor(
    settings: Settings,
    redis: Redis,
    blobs: BlobStore,
    *,
    clients: list[ComfyUI] | None = None,
    on_capacity: Callable[[], None] = lambda: None,
) -> Executor:
    """The executor `settings.executor` names; `on_capacity` is called whenever capacity grows."""
    from backend.executors import ComfyUIExecutor, NoopExecutor

    if settings.executor == "noop":
        return NoopExecutor()
    return ComfyUIExecutor(
        redis,
        blobs,
        clients=clients,
        on_capacity=on_capacity,
        comfyui_urls=settings.comfyui_urls,
        comfyui_quiet_poll_s=settings.comfyui_quiet_poll_s,
        slots_per_instance=settings.slots_per_instance,
        events_stream=settings.events_stream,
        events_maxlen=settings.events_maxlen,
        max_image_bytes=settings.max_image_bytes,
        max_image_pixels=settings.max_image_pixels,
        retry_backoff_s=settings.retry_backoff_s,
        retry_backoff_max_s=settings.retry_backoff_max_s,
        breaker_probe_max_s=settings.breaker_probe_max_s,
        transient_retries=settings.transient_retries,
        prompt_queue_timeout_s=settings.prompt_queue_timeout_s,
        task_timeout_s=settings.task_timeout_s,
        blob_ttl_s=settings.blob_ttl_s,
    )


def build_notifier(settings: Settings, redis: Redis, senders: dict[str, Sender], *, concurrency: int = 8) -> Notifier:
    """The notifier as Settings configure it, sending through `senders` (platform name -> Sender)."""
    from backend.notifier import Notifier

    return Notifier(
        redis,
        senders,
        concurrency=concurrency,
        results_stream=settings.results_stream,
        events_stream=settings.events_stream,
        group=settings.notifiers_group,
        admin_ids={platform: getattr(settings, f"{platform}_admin_ids") for platform in BOTS},
        send_retries=settings.send_retries,
        max_deliveries=settings.max_deliveries,
        max_interrupted_deliveries=settings.max_interrupted_deliveries,
        delivered_ttl_s=settings.delivered_ttl_s,
        options=consumer_options(settings),
    )


def build_ops(
    settings: Settings,
    redis: Redis,
    *,
    worker: Worker | None = None,
    deliver: Deliver | None = None,
    blobs: BlobStore | None = None,
    modes: list[str] | None = None,
) -> Ops:
    """Metrics, health, retention and (with `deliver`, the notifier's `alert_admins`) the alerts of
    one process, as Settings configure them."""
    from backend.alerts import Alerts
    from backend.ops import Ops

    alerter = None
    if deliver is not None:
        alerter = Alerts(
            redis,
            deliver,
            alert_lang=settings.alert_lang,
            alert_wait_s=settings.alert_wait_s,
            alert_repeat_s=settings.alert_repeat_s,
        )
    return Ops(
        redis,
        worker=worker,
        alerter=alerter,
        blobs=blobs,
        modes=modes,
        streams=stream_names(settings),
        ops_interval_s=settings.ops_interval_s,
        metrics_port=settings.metrics_port,
        blob_sweep_every_s=settings.blob_sweep_every_s,
        dead_max_len=settings.dead_max_len,
        dead_max_age_s=settings.dead_max_age_s,
    )


def build_senders(settings: Settings, services: Services) -> dict[str, Any]:
    return {
        platform: bot_module(platform, "sender").build_sender(settings, services.blobs)
        for platform in BOTS
        if bot_token_set(settings, platform)
    }


async def run_worker(settings: Settings, stop: asyncio.Event) -> int:
    async with Services.open(settings) as services:
        worker = build_worker(settings, services.redis, blobs=services.blobs, workflows=services.workflows)
        ops = build_ops(settings, services.redis, worker=worker, blobs=services.blobs, modes=services.workflows.names)
        await with_ops(ops, serve(worker, stop))
    return EXIT_OK


async def run_notifier(settings: Settings, stop: asyncio.Event) -> int:
    async with Services.open(settings) as services:
        notifier = build_notifier(settings, services.redis, build_senders(settings, services))
        ops = build_ops(settings, services.redis, deliver=notifier.alert_admins, modes=services.workflows.names)
        await with_ops(ops, serve(notifier, stop))
    return EXIT_OK


async def run_bot(settings: Settings, platform: str, stop: asyncio.Event) -> int:
    if not bot_token_set(settings, platform):
        print(f"{platform.upper()}_BOT_TOKEN is not set: put it in the environment or .env", file=sys.stderr)
        return EXIT_ERROR

    async with Services.open(settings) as services:  # the bot's own parts are its business; ops needs Redis
        ops = build_ops(settings, services.redis, modes=services.workflows.names)
        await with_ops(ops, bot_module(platform, "app").serve(settings, stop))
    return EXIT_OK


async def run_up(settings: Settings, stop: asyncio.Event, *, install_comfyui: bool = False) -> int:
    """Worker, notifier and every bot whose token is set in one process; a private Redis and the
    installed ComfyUI too when none is configured and nothing answers on the usual port."""
    from backend.embedded_redis import port_open, start_embedded_redis

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
            worker = build_worker(settings, services.redis, blobs=services.blobs, workflows=services.workflows)
            notifier = build_notifier(settings, services.redis, build_senders(settings, services))
            ops = build_ops(
                settings,
                services.redis,
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
