"""Intake: what every bot calls to turn a photo into a queued task.

It refuses early and politely (paused, limits, bad image), stores the normalised image as a blob,
XADDs the task and answers with the task's place in line. Limits live here, not in the bots, so
Telegram and Discord users share them: K tasks queued or running per user, N per hour, a global cap.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass
from typing import Any, AsyncIterator

from redis.asyncio import Redis

from backend import images, keys
from backend.admin import estimate_wait, queue_depth
from backend.blobs import BlobStore, BlobTooLarge
from backend.errors import Refused
from backend.settings import Settings
from backend.tasks import Task, new_task_id, now_ms, validate_reply
from backend.workflows import Workflows

HOUR_MS = 3600 * 1000
MB = 1024 * 1024


@dataclass(frozen=True)
class Submitted:
    task_id: str
    position: int
    eta_s: int


# KEYS: the user's active set, the user's recent zset. ARGV: task id, now (ms), an hour (ms),
# max active, max per hour, TTL (s), exempt (0/1). Returns 0 reserved, 1 too many active, 2 hourly cap.
RESERVE_SCRIPT = """
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', tonumber(ARGV[2]) - tonumber(ARGV[3]))
if ARGV[7] == '0' then
  if redis.call('SCARD', KEYS[1]) >= tonumber(ARGV[4]) then return 1 end
  if redis.call('ZCARD', KEYS[2]) >= tonumber(ARGV[5]) then return 2 end
end
redis.call('SADD', KEYS[1], ARGV[1])
redis.call('EXPIRE', KEYS[1], ARGV[6])
redis.call('ZADD', KEYS[2], ARGV[2], ARGV[1])
redis.call('EXPIRE', KEYS[2], math.floor(tonumber(ARGV[3]) / 1000))
return 0
"""


class Intake:
    """Validates, stores and enqueues photos for any platform."""

    def __init__(self, redis: Redis, settings: Settings, blobs: BlobStore, workflows: Workflows):
        self.redis = redis
        self.settings = settings
        self.blobs = blobs
        self.workflows = workflows
        self._reserve = redis.register_script(RESERVE_SCRIPT)

    def check_size(self, size: int | None) -> None:
        """Refuse by the size a platform declares, before downloading anything."""
        images.check_size(size, self.settings.max_image_bytes)

    async def check_open(self, user: str, *, exempt: bool = False, count: int = 1) -> None:
        """Refuse when paused, when the queue is full, or when `user` is over a limit for `count` more."""
        if await self.redis.exists(keys.PAUSED):
            raise Refused("paused")
        depth = await queue_depth(self.redis, self.settings)
        if depth + count > self.settings.queue_cap:
            raise Refused("queue_full", detail=f"queue depth {depth}")
        if exempt:
            return
        limit = self.settings.user_max_active
        active = await self.redis.scard(keys.user_active(user))
        if active + count > limit:
            raise Refused("too_many_active", limit=limit)
        hourly = self.settings.user_max_per_hour
        recent = await self.redis.zcount(keys.user_recent(user), now_ms() - HOUR_MS, "+inf")
        if recent + count > hourly:
            raise Refused("rate_limited", limit=hourly)

    async def submit(
        self,
        data: bytes,
        *,
        mode: str,
        reply: dict[str, Any],
        user: str,
        params: dict[str, Any] | None = None,
        exempt: bool = False,
    ) -> Submitted:
        """Check, normalise, store and enqueue one photo; raises Refused with a stable code."""
        checked_params = self.workflows.get(mode).check_params(params)
        validate_reply(reply)
        await self.check_open(user, exempt=exempt)
        task_id = new_task_id()
        async with self._reserved(user, task_id, exempt=exempt):
            prepared = await asyncio.to_thread(
                images.prepare_input,
                data,
                max_bytes=self.settings.max_image_bytes,
                max_pixels=self.settings.max_image_pixels,
            )
            try:
                input_key = await self.blobs.put("in", prepared.data)
            except BlobTooLarge as exc:
                raise Refused("too_large", detail=str(exc), max_mb=self.settings.max_image_bytes // MB) from None
            return await self._enqueue(task_id, input_key, mode=mode, reply=reply, user=user, params=checked_params,
                                       digest=images.content_digest(prepared.data))

    async def resubmit(
        self, input_key: str, *, mode: str, reply: dict[str, Any], user: str, exempt: bool = False
    ) -> Submitted:
        """Run an already stored input again (the "Other mode" button); limits apply as for a new photo."""
        self.workflows.get(mode)
        validate_reply(reply)
        await self.check_open(user, exempt=exempt)
        if await self.blobs.get(input_key) is None:
            raise Refused("input_expired")
        task_id = new_task_id()
        async with self._reserved(user, task_id, exempt=exempt):
            return await self._enqueue(task_id, input_key, mode=mode, reply=reply, user=user, params={})

    @contextlib.asynccontextmanager
    async def _reserved(self, user: str, task_id: str, *, exempt: bool) -> AsyncIterator[None]:
        """Take one of the user's places atomically (no burst of photos can slip past the limits);
        given back if the photo is refused before it is queued."""
        outcome = await self._reserve(
            keys=[keys.user_active(user), keys.user_recent(user)],
            args=[task_id, now_ms(), HOUR_MS, self.settings.user_max_active, self.settings.user_max_per_hour,
                  self.settings.blob_ttl_s, int(exempt)],
        )
        if outcome == 1:
            raise Refused("too_many_active", limit=self.settings.user_max_active)
        if outcome == 2:
            raise Refused("rate_limited", limit=self.settings.user_max_per_hour)
        try:
            yield
        except BaseException:
            async with self.redis.pipeline(transaction=True) as pipe:
                pipe.srem(keys.user_active(user), task_id)
                pipe.zrem(keys.user_recent(user), task_id)
                await pipe.execute()
            raise

    async def _enqueue(
        self, task_id: str, input_key: str, *, mode: str, reply: dict[str, Any], user: str, params: dict[str, Any],
        digest: str = "",
    ) -> Submitted:
        """The task's bookkeeping is written before its stream entry, so a fast worker never races it."""
        task = Task(task_id=task_id, mode=mode, input=input_key, reply=reply, user=user, params=params, digest=digest)
        settings = self.settings
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.hset(keys.task(task_id), mapping={"user": user, "state": "queued", "mode": mode,
                                                   "submitted_at": task.submitted_at})
            pipe.expire(keys.task(task_id), settings.blob_ttl_s)
            pipe.xadd(settings.tasks_stream, task.encode())
            pipe.xinfo_stream(settings.tasks_stream)
            entry_id, info = (await pipe.execute())[2:4]
        ordinal = int(info.get("entries-added") or info.get("length") or 0)
        await self.redis.hset(keys.task(task_id), mapping={"ordinal": ordinal, "entry_id": entry_id})
        position, eta = await estimate_wait(self.redis, settings, ordinal)
        return Submitted(task_id, position, eta)

    async def default_mode(self, user: str) -> str:
        """The user's chosen mode, else the bot's default."""
        stored = await self.redis.get(keys.user_mode(user))
        mode = stored.decode() if isinstance(stored, bytes) else stored
        return mode if mode in self.workflows else self.settings.default_mode

    async def set_default_mode(self, user: str, mode: str) -> None:
        self.workflows.get(mode)
        await self.redis.set(keys.user_mode(user), mode)
