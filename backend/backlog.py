"""A per-user backlog: photos beyond the concurrent cap wait here and start by themselves.

A user may have USER_MAX_ACTIVE photos queued or running; up to USER_BACKLOG more are kept, first in
first out, with everything needed to queue them later (the prepared image as a blob, the mode, the
reply channel). `pump` (run by the position announcer, one process at a time) queues each user's
oldest waiting photo whenever intake lets it: the per-hour limit, the global cap and pause still
apply, since it goes through intake like any photo. Each item carries an idempotency key, so a
crash between queueing it and taking it off the list can't queue it twice.
"""

from __future__ import annotations

import asyncio
import json
import logging
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

from redis.asyncio import Redis

from backend import images
from backend.blobs import BlobStore
from backend.errors import Refused
from backend.intake import Intake, Submitted
from backend.settings import Settings

log = logging.getLogger(__name__)

USERS = "repairbot:backlog:users"  # set of users with a backlog
WAITS_FOR = ("too_many_active", "rate_limited", "queue_full", "paused")  # try again later, keep the photo


def _key(user: str) -> str:
    return f"repairbot:backlog:{user}"


class Backlog:
    def __init__(self, redis: Redis, settings: Settings, intake: Intake, blobs: BlobStore):
        self.redis = redis
        self.settings = settings
        self.intake = intake
        self.blobs = blobs
        self.on_queued: Callable[[Submitted, dict[str, Any]], Awaitable[None]] | None = None

    async def room(self, user: str) -> int:
        return max(0, self.settings.user_backlog - int(await self.redis.llen(_key(user))))

    async def hold(self, data: bytes, *, user: str, mode: str, reply: dict[str, Any], exempt: bool = False) -> int:
        """Keep a photo for later; its place among the user's waiting photos (1 = next). Refused when
        the image is not one we take, or "too_many_active" when the backlog is full too."""
        self.intake.workflows.get(mode)
        if await self.room(user) <= 0:
            raise Refused("too_many_active", limit=self.settings.user_max_active)
        prepared = await asyncio.to_thread(
            images.prepare_input,
            data,
            max_bytes=self.settings.max_image_bytes,
            max_pixels=self.settings.max_image_pixels,
        )
        input_key = await self.blobs.put("in", prepared.data)
        item = {"id": uuid.uuid4().hex, "input": input_key, "mode": mode, "reply": reply, "exempt": exempt}
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.rpush(_key(user), json.dumps(item, separators=(",", ":")))
            pipe.expire(_key(user), self.settings.blob_ttl_s)
            pipe.sadd(USERS, user)
            pipe.expire(USERS, self.settings.blob_ttl_s)
            length = (await pipe.execute())[0]
        return int(length)

    async def pump(self) -> list[Submitted]:
        """Queue each user's oldest waiting photos while intake takes them; the rest keep waiting."""
        queued: list[Submitted] = []
        for raw_user in await self.redis.smembers(USERS):
            user = raw_user.decode() if isinstance(raw_user, bytes) else raw_user
            while (head := await self.redis.lindex(_key(user), 0)) is not None:
                item = json.loads(head)
                try:
                    submitted = await self.intake.resubmit(
                        item["input"],
                        mode=item["mode"],
                        reply=item["reply"],
                        user=user,
                        exempt=bool(item.get("exempt")),
                        event_key=f"backlog:{item['id']}",
                    )
                except Refused as refusal:
                    if refusal.code in WAITS_FOR:
                        break
                    log.info("backlogged photo of %s dropped: %s", user, refusal.code)
                    await self.redis.lpop(_key(user))
                    continue
                await self.redis.lpop(_key(user))
                if not submitted.duplicate and self.on_queued is not None:
                    await self.on_queued(submitted, item["reply"])
                queued.append(submitted)
            if not await self.redis.llen(_key(user)):
                await self.redis.srem(USERS, user)
        return queued
