"""The shared parts every process builds the same way: Redis, blobs, workflows, intake, admin."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import AsyncIterator

from redis.asyncio import Redis

from backend.admin import Admin
from backend.blobs import BlobStore, make_blob_store
from backend.comfyui import ComfyUIClient
from backend.intake import Intake
from backend.redis_conn import connect
from backend.settings import Settings
from backend.workflows import Workflows


@dataclass
class Services:
    settings: Settings
    redis: Redis
    blobs: BlobStore
    workflows: Workflows
    intake: Intake
    admin: Admin

    @classmethod
    def create(cls, settings: Settings) -> "Services":
        """Admin gets HTTP-only ComfyUI clients (no WebSocket) for the instances' health and queues."""
        redis = connect(settings)
        blobs = make_blob_store(settings, redis)
        workflows = Workflows.load(settings.workflows_dir)
        return cls(
            settings=settings,
            redis=redis,
            blobs=blobs,
            workflows=workflows,
            intake=Intake(redis, settings, blobs, workflows),
            admin=Admin(redis, settings, [ComfyUIClient(url) for url in settings.comfyui_urls]),
        )

    @classmethod
    @contextlib.asynccontextmanager
    async def open(cls, settings: Settings) -> AsyncIterator["Services"]:
        """`async with Services.open(settings) as services:` closes the connections on the way out."""
        services = cls.create(settings)
        try:
            yield services
        finally:
            await services.close()

    async def close(self) -> None:
        for client in self.admin.comfy_clients:
            await client.close()
        await self.redis.aclose()
