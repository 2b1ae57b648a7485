"""The shared parts every process builds the same way: Redis, blobs, workflows, intake, admin."""

from __future__ import annotations

from dataclasses import dataclass

from redis.asyncio import Redis

from backend.admin import Admin
from backend.blobs import BlobStore, make_blob_store
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
    def create(cls, settings: Settings, *, comfy_clients: list | None = None) -> "Services":
        redis = connect(settings)
        blobs = make_blob_store(settings, redis)
        workflows = Workflows.load(settings.workflows_dir)
        return cls(
            settings=settings,
            redis=redis,
            blobs=blobs,
            workflows=workflows,
            intake=Intake(redis, settings, blobs, workflows),
            admin=Admin(redis, settings, comfy_clients or []),
        )

    async def close(self) -> None:
        await self.redis.aclose()
