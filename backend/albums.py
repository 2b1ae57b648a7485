"""Several photos under one Telegram status message (an album, or a burst sent one by one).

Kept in Redis per chat and status message: how many of the photos are still out (so the sender, in
another process, knows when the last result is in and posts them together), which photos were
counted as finished, and the task ids (so one Cancel button reaches every one of them).
"""

from __future__ import annotations

from redis.asyncio import Redis

from backend import keys
from backend.replies import Reply
from backend.tasks import Result, new_task_id

FINISHED_TTL_S = 24 * 3600
# The error code of the result `hand_over_last` writes: it queues nothing and says nothing to the user.
NOT_QUEUED = "not_queued"


async def open_album(redis: Redis, chat_id: int, status_message_id: int, count: int, ttl_s: int) -> None:
    """Expect `count` photos under this status message (each one later finishes: result or refusal)."""
    await redis.set(keys.album(chat_id, status_message_id, "left"), count, ex=ttl_s)


async def add_album_task(redis: Redis, chat_id: int, status_message_id: int, task_id: str, ttl_s: int) -> None:
    key = keys.album(chat_id, status_message_id, "tasks")
    async with redis.pipeline(transaction=True) as pipe:
        pipe.sadd(key, task_id)
        pipe.expire(key, ttl_s)
        await pipe.execute()


async def album_tasks(redis: Redis, chat_id: int | str, status_message_id: int | str) -> list[str]:
    members = await redis.smembers(keys.album(chat_id, status_message_id, "tasks"))
    return [m.decode() if isinstance(m, bytes) else m for m in members]


async def finish_album_item(redis: Redis, chat_id: int | str, status_message_id: int | str, item: str) -> int:
    """Count one photo of the album as finished (once per `item`); returns how many are still out.

    Counting down from the album size, rather than removing ids from a set, is what lets a task
    finish before the bot has even learnt its id.
    """
    finished = keys.album(chat_id, status_message_id, "finished")
    left = keys.album(chat_id, status_message_id, "left")
    if not await redis.sadd(finished, item):
        remaining = await redis.get(left)
        return int(remaining) if remaining is not None else 0
    async with redis.pipeline(transaction=True) as pipe:
        pipe.expire(finished, FINISHED_TTL_S)
        pipe.decr(left)
        _, remaining = await pipe.execute()
    return max(0, int(remaining))


async def hand_over_last(redis: Redis, results_stream: str, reply: Reply) -> None:
    """The bot counted the album's last photo (refused, dropped) after the sender had counted every
    queued one's result, and the sender posts the album only when its own count reaches the end: a
    result that queues nothing (`NOT_QUEUED`) goes to it through the results stream, so it posts what
    is there and closes the status, as reliably as any result."""
    note = Result(task_id=new_task_id(), status="cancelled", reply=reply, error=NOT_QUEUED)
    await redis.xadd(results_stream, note.encode())
