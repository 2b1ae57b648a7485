"""The shared parts every process builds the same way: Redis, blobs, workflows, intake, admin."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from backend.settings import Settings

if TYPE_CHECKING:  # imported when built: a CLI command pays only for what it uses
    from redis.asyncio import Redis

    from backend.admin import Admin
    from backend.backlog import Backlog
    from backend.blobs import BlobStore
    from backend.cancelling import Cancelling
    from backend.intake import Intake
    from backend.positions import PositionAnnouncer, QueueView
    from backend.replies import Reply
    from backend.reruns import Reruns
    from backend.status_line import StatusLines
    from backend.stream_names import StreamNames
    from backend.task_handle import TaskHandle
    from backend.workflows import Workflows


def stream_names(settings: Settings) -> StreamNames:
    """The stream and group names Settings configure, as the parts take them."""
    from backend.stream_names import StreamNames

    return StreamNames(
        tasks_stream=settings.tasks_stream,
        results_stream=settings.results_stream,
        dead_stream=settings.dead_stream,
        events_stream=settings.events_stream,
        workers_group=settings.workers_group,
        notifiers_group=settings.notifiers_group,
    )


def make_blob_store(settings: Settings, redis: Redis) -> BlobStore:
    """The blob store BLOB_STORE names; a blob may be four times MAX_IMAGE_BYTES (an output may have four
    times the pixels of its input)."""
    from backend.blobs import FileBlobStore, RedisBlobStore

    cap = settings.max_image_bytes * 4
    if settings.blob_store == "fs":
        return FileBlobStore(settings.blob_dir, ttl_s=settings.blob_ttl_s, max_bytes=cap)
    return RedisBlobStore(redis, ttl_s=settings.blob_ttl_s, max_bytes=cap)


def parallel_runs(settings: Settings) -> int:
    """How many photos run at once: every ComfyUI instance runs WORKER_CONCURRENCY of them."""
    return max(1, len(settings.comfyui_urls) * max(1, settings.worker_concurrency))


@dataclass
class Services:
    settings: Settings
    redis: Redis
    blobs: BlobStore
    workflows: Workflows
    intake: Intake
    admin: Admin
    lines: StatusLines  # the forward-only gate of every status message
    positions: PositionAnnouncer  # keeps waiting photos' place in line current
    queue: QueueView  # where a user's photos are
    reruns: Reruns  # "Other mode" once per photo and mode
    backlog: Backlog  # photos beyond the concurrent cap, started by themselves
    cancelling: Cancelling  # Cancel and /cancel, the backlog's photos included

    @classmethod
    def create(cls, settings: Settings, *, comfyui: bool = True) -> Services:
        """Admin gets HTTP-only ComfyUI clients (no WebSocket) for the instances' health and queues;
        with comfyui=False it gets none (and the HTTP client library is not even imported)."""
        from backend.admin import Admin
        from backend.backlog import Backlog
        from backend.cancelling import Cancelling
        from backend.intake import Intake
        from backend.positions import PositionAnnouncer, QueueView
        from backend.redis_conn import connect
        from backend.reruns import Reruns
        from backend.status_line import StatusLines, line_id
        from backend.workflows import Workflows

        if comfyui:
            from backend.comfyui import ComfyUIClient

            clients = [ComfyUIClient(url) for url in settings.comfyui_urls]
        else:
            clients = []
        redis = connect(settings)
        blobs = make_blob_store(settings, redis)
        workflows = Workflows.load(settings.workflows_dir)
        streams, parallel = stream_names(settings), parallel_runs(settings)
        intake = Intake(
            redis,
            blobs,
            workflows,
            streams=streams,
            parallel=parallel,
            default_mode=settings.default_mode,
            max_image_bytes=settings.max_image_bytes,
            max_image_pixels=settings.max_image_pixels,
            max_image_pixels_ceiling=settings.max_image_pixels_ceiling,
            queue_cap=settings.queue_cap,
            user_max_active=settings.user_max_active,
            user_max_per_hour=settings.user_max_per_hour,
            blob_ttl_s=settings.blob_ttl_s,
            idempotency_ttl_s=settings.idempotency_ttl_s,
        )
        lines = StatusLines(redis)
        backlog = Backlog(
            redis,
            intake,
            blobs,
            user_backlog=settings.user_backlog,
            user_max_active=settings.user_max_active,
            max_image_bytes=settings.max_image_bytes,
            max_image_pixels=settings.max_image_pixels,
            blob_ttl_s=settings.blob_ttl_s,
            idempotency_ttl_s=settings.idempotency_ttl_s,
            results_stream=settings.results_stream,
        )
        intake.backlog = backlog
        queue = QueueView(redis, streams=streams, parallel=parallel)
        positions = PositionAnnouncer(
            redis,
            queue,
            every_s=settings.status_refresh_s,
            backlog=backlog,
            events_stream=settings.events_stream,
            events_maxlen=settings.events_maxlen,
            blob_ttl_s=settings.blob_ttl_s,
        )

        async def started_from_backlog(submitted: Any, reply: Reply) -> None:
            await lines.add_task(line_id(reply) or "", submitted.task_id)
            await positions.watch(submitted.task_id, reply)

        backlog.on_queued = started_from_backlog
        admin = Admin(redis, clients, streams=streams, blob_ttl_s=settings.blob_ttl_s)
        return cls(
            settings=settings,
            redis=redis,
            blobs=blobs,
            workflows=workflows,
            intake=intake,
            admin=admin,
            lines=lines,
            positions=positions,
            queue=queue,
            reruns=Reruns(redis, settings.blob_ttl_s),
            backlog=backlog,
            cancelling=Cancelling(admin, backlog),
        )

    def task(self, task_id: str) -> TaskHandle:
        """A handle on one task: its state, its result (waiting for it if need be), cancel."""
        from backend.task_handle import TaskHandle

        return TaskHandle(self.redis, task_id, results_stream=self.settings.results_stream)

    @classmethod
    @contextlib.asynccontextmanager
    async def open(cls, settings: Settings, *, comfyui: bool = True) -> AsyncIterator[Services]:
        """`async with Services.open(settings) as services:` closes the connections on the way out."""
        services = cls.create(settings, comfyui=comfyui)
        try:
            yield services
        finally:
            await services.close()

    async def close(self) -> None:
        for client in self.admin.comfy_clients:
            await client.close()
        await self.redis.aclose()
