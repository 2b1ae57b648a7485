"""Run the backend in-process for tests: a Worker and a Notifier with the given senders."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

from backend.processes import build_notifier, build_worker
from backend.services import Services
from backend.settings import Settings


@contextlib.asynccontextmanager
async def running_pipeline(settings: Settings, senders: dict[str, Any] | None = None) -> AsyncIterator[Services]:
    """Yields Services (redis, blobs, workflows, intake, admin) while a worker and a notifier run."""
    services = Services.create(settings)
    worker = build_worker(settings, services.redis, blobs=services.blobs, workflows=services.workflows)
    notifier = build_notifier(settings, services.redis, senders or {})
    tasks = [asyncio.create_task(worker.run()), asyncio.create_task(notifier.run())]
    try:
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
