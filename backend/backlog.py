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

from pydantic import ValidationError
from redis.asyncio import Redis

from backend import images, keys
from backend.blobs import BlobStore
from backend.errors import Refused
from backend.intake import Intake, Submitted
from backend.replies import REPLY, Reply, reply_json
from backend.status_line import line_id
from backend.tasks import Result, now_ms

log = logging.getLogger(__name__)

USERS = "repairbot:backlog:users"  # set of users with a backlog
WAITS_FOR = ("too_many_active", "rate_limited", "queue_full", "paused")  # try again later, keep the photo

# KEYS: the user's backlog, the item's event claim (the one `pump` queues it under), the results stream.
# ARGV: the item as stored, its id, its reply (JSON), the claim's TTL (s), then the cancelled result's
# field/value pairs. {1}: taken off the list and answered "cancelled" through the results stream, like a
# task the worker cancelled (so an album's count and its status close as for any other photo); {0, task}:
# `pump` queued it first, as that task; {2}: gone already. The event claim is what makes this safe
# against `pump`: whichever writes it first owns the photo, and the other one sees it.
CANCEL_ITEM_SCRIPT = """
local first = redis.call('HGET', KEYS[2], 'task_id')
if first then
  redis.call('LREM', KEYS[1], 1, ARGV[1])
  return {0, first}
end
if redis.call('LREM', KEYS[1], 1, ARGV[1]) == 0 then return {2} end
redis.call('HSET', KEYS[2], 'task_id', ARGV[2], 'reply', ARGV[3])
redis.call('EXPIRE', KEYS[2], ARGV[4])
local entry = {}
for i = 5, #ARGV do entry[#entry + 1] = ARGV[i] end
redis.call('XADD', KEYS[3], '*', unpack(entry))
return {1}
"""


def _key(user: str) -> str:
    return f"repairbot:backlog:{user}"


def _reply_of(item: dict[str, Any]) -> Reply | None:
    """A backlog item's reply channel (stored as the JSON object it is on the streams)."""
    try:
        return REPLY.validate_python(item.get("reply"))
    except ValidationError:
        return None


class Backlog:
    """Photos a user sends past the concurrent cap, kept to start by themselves, first in first out.

    :param user_backlog: photos of one user kept waiting at most
    :param user_max_active: the concurrent cap, named in the refusal when the backlog is full too
    :param max_image_bytes: a larger photo is refused
    :param max_image_pixels: a larger image is shrunk to this many pixels
    :param blob_ttl_s: how long the waiting photos are kept
    :param idempotency_ttl_s: how long a cancelled photo's claim is remembered
    :param results_stream: where a cancelled photo's result goes
    """

    def __init__(
        self,
        redis: Redis,
        intake: Intake,
        blobs: BlobStore,
        *,
        user_backlog: int = 10,
        user_max_active: int = 3,
        max_image_bytes: int = 20 * 1024 * 1024,
        max_image_pixels: int = 40_000_000,
        blob_ttl_s: int = 24 * 3600,
        idempotency_ttl_s: int = 48 * 3600,
        results_stream: str = "photo_repair_results",
    ):
        self.redis = redis
        self.user_backlog = user_backlog
        self.user_max_active = user_max_active
        self.max_image_bytes = max_image_bytes
        self.max_image_pixels = max_image_pixels
        self.blob_ttl_s = blob_ttl_s
        self.idempotency_ttl_s = idempotency_ttl_s
        self.results_stream = results_stream
        self.intake = intake
        self.blobs = blobs
        self.on_queued: Callable[[Submitted, Reply], Awaitable[None]] | None = None
        self._cancel_item = redis.register_script(CANCEL_ITEM_SCRIPT)

    async def room(self, user: str) -> int:
        return max(0, self.user_backlog - int(await self.redis.llen(_key(user))))

    async def hold(self, data: bytes, *, user: str, mode: str, reply: Reply, exempt: bool = False) -> int:
        """Keep a photo for later; its place among the user's waiting photos (1 = next). Refused when
        the image is not one we take, or "too_many_active" when the backlog is full too."""
        self.intake.workflows.get(mode)
        if await self.room(user) <= 0:
            raise Refused("too_many_active", limit=self.user_max_active)
        prepared = await asyncio.to_thread(
            images.prepare_input,
            data,
            max_bytes=self.max_image_bytes,
            max_pixels=self.max_image_pixels,
        )
        input_key = await self.blobs.put("in", prepared.data)
        reply_fields = reply.model_dump(mode="json", exclude_unset=True)
        item = {
            "id": uuid.uuid4().hex,
            "input": input_key,
            "mode": mode,
            "reply": reply_fields,
            "exempt": exempt,
            "at": now_ms(),  # when the user sent it: the caption counts the wait in the backlog too
        }
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.rpush(_key(user), json.dumps(item, separators=(",", ":")))
            pipe.expire(_key(user), self.blob_ttl_s)
            pipe.sadd(USERS, user)
            pipe.expire(USERS, self.blob_ttl_s)
            length = (await pipe.execute())[0]
        return int(length)

    async def pump(self) -> list[Submitted]:
        """Queue each user's oldest waiting photos while intake takes them; the rest keep waiting."""
        queued: list[Submitted] = []
        for raw_user in await self.redis.smembers(USERS):
            user = raw_user.decode() if isinstance(raw_user, bytes) else raw_user
            while (head := await self.redis.lindex(_key(user), 0)) is not None:
                item = json.loads(head)
                reply = _reply_of(item)
                if reply is None:
                    log.warning("backlogged photo of %s dropped: its reply channel is unreadable", user)
                    await self.redis.lrem(_key(user), 1, head)
                    continue
                try:
                    submitted = await self.intake.resubmit(
                        item["input"],
                        mode=item["mode"],
                        reply=reply,
                        user=user,
                        exempt=bool(item.get("exempt")),
                        event_key=f"backlog:{item['id']}",
                        sent_at=item.get("at"),
                    )
                except Refused as refusal:
                    if refusal.code in WAITS_FOR:
                        break
                    log.info("backlogged photo of %s dropped: %s", user, refusal.code)
                    await self.redis.lrem(_key(user), 1, head)
                    continue
                await self.redis.lrem(_key(user), 1, head)  # by value: a cancel may have taken it meanwhile
                if not submitted.duplicate and self.on_queued is not None:
                    await self.on_queued(submitted, reply)
                queued.append(submitted)
            if not await self.redis.llen(_key(user)):
                await self.redis.srem(USERS, user)
        return queued

    async def cancel(self, user: str, *, line: str | None = None) -> tuple[int, list[str]]:
        """Cancel `user`'s waiting photos (only those under the status message `line`, when given).

        Returns how many were taken off the backlog (each is answered "cancelled" like any photo) and
        the ids of tasks that `pump` queued from it meanwhile, which the caller flags as any running task.
        """
        cancelled, queued = 0, []
        for raw in await self.redis.lrange(_key(user), 0, -1):
            item = json.loads(raw)
            reply = _reply_of(item)
            if reply is None or (line is not None and line_id(reply) != line):
                continue  # an unreadable one is pump's to drop
            result = Result(
                task_id=item["id"],
                status="cancelled",
                reply=reply,
                mode=item["mode"],
                input=item["input"],
                user=user,
            )
            fields = [part for pair in result.encode().items() for part in pair]
            args = [raw, item["id"], reply_json(reply), self.idempotency_ttl_s, *fields]
            outcome = await self._cancel_item(
                keys=[_key(user), keys.event_claim(f"backlog:{item['id']}"), self.results_stream], args=args
            )
            if int(outcome[0]) == 1:
                cancelled += 1
            elif int(outcome[0]) == 0:
                queued.append(outcome[1].decode() if isinstance(outcome[1], bytes) else str(outcome[1]))
        if cancelled:
            log.info("cancelled %d backlogged photo(s) of %s", cancelled, user)
        return cancelled, queued

    async def waiting_by_line(self) -> dict[str, int]:
        """How many photos wait in the backlog under each status message (for its "N more wait" line)."""
        counts: dict[str, int] = {}
        for raw_user in await self.redis.smembers(USERS):
            user = raw_user.decode() if isinstance(raw_user, bytes) else raw_user
            for raw in await self.redis.lrange(_key(user), 0, -1):
                line = line_id(_reply_of(json.loads(raw)))
                if line is not None:
                    counts[line] = counts.get(line, 0) + 1
        return counts
