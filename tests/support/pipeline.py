"""Run the backend in-process for tests: a Worker and a Notifier with the given senders."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

from redis.exceptions import ResponseError

from backend.processes import build_notifier, build_worker
from backend.services import Services
from backend.settings import Settings


@contextlib.asynccontextmanager
async def running_pipeline(settings: Settings, senders: dict[str, Any] | None = None) -> AsyncIterator[Services]:
    """Yields Services (redis, blobs, workflows, intake, admin) while a worker and a notifier run,
    once the notifier reads progress events (its group on the events stream starts at `$`: an event
    sent before it exists is never read, by design, and a test would miss it)."""
    services = Services.create(settings)
    worker = build_worker(settings, services.redis, blobs=services.blobs, workflows=services.workflows)
    notifier = build_notifier(settings, services.redis, senders or {})
    tasks = [asyncio.create_task(worker.run()), asyncio.create_task(notifier.run())]
    try:
        await _until_notifier_reads_events(services, settings)
        yield services
    finally:
        worker.stop()
        notifier.stop()
        done, pending = await asyncio.wait(tasks, timeout=15)
        for task in pending:
            task.cancel()
        for task in done:
            if task.exception() is not None:
                raise task.exception()
        await services.close()


async def _until_notifier_reads_events(services: Services, settings: Settings, timeout_s: float = 10.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while loop.time() < deadline:
        with contextlib.suppress(ResponseError):  # no events stream yet
            groups = await services.redis.xinfo_groups(settings.events_stream)
            if any(group["name"] in (settings.notifiers_group, settings.notifiers_group.encode()) for group in groups):
                return
        await asyncio.sleep(0.01)
    raise TimeoutError("the notifier did not start reading events")
