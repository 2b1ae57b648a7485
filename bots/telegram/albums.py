"""Albums: photos sent together (one media_group_id) arrive as separate updates.

The bot collects a group for a short window, then queues one task per photo under one status
message. Redis keeps, per chat and status message, how many photos are still out (so the sender, in
another process, knows when the album's last result is in) and the album's task ids (so its Cancel
button reaches every one of them).
"""

from __future__ import annotations

import asyncio

from redis.asyncio import Redis
from telegram import Message

COLLECT_WINDOW_S = 1.0


def _key(chat_id: int | str, status_message_id: int | str, part: str) -> str:
    return f"repairbot:telegram:album:{chat_id}:{status_message_id}:{part}"


async def open_album(redis: Redis, chat_id: int, status_message_id: int, count: int, ttl_s: int) -> None:
    """Expect `count` photos under this status message (each one later finishes: result or refusal)."""
    await redis.set(_key(chat_id, status_message_id, "left"), count, ex=ttl_s)


async def add_album_task(redis: Redis, chat_id: int, status_message_id: int, task_id: str, ttl_s: int) -> None:
    key = _key(chat_id, status_message_id, "tasks")
    async with redis.pipeline(transaction=True) as pipe:
        pipe.sadd(key, task_id)
        pipe.expire(key, ttl_s)
        await pipe.execute()


async def album_tasks(redis: Redis, chat_id: int, status_message_id: int) -> list[str]:
    members = await redis.smembers(_key(chat_id, status_message_id, "tasks"))
    return [m.decode() if isinstance(m, bytes) else m for m in members]


async def finish_album_item(redis: Redis, chat_id: int | str, status_message_id: int | str, item: str) -> int:
    """Count one photo of the album as finished (once per `item`); returns how many are still out.

    Counting down from the album size, rather than removing ids from a set, is what lets a task
    finish before the bot has even learnt its id.
    """
    finished = _key(chat_id, status_message_id, "finished")
    left = _key(chat_id, status_message_id, "left")
    if not await redis.sadd(finished, item):
        remaining = await redis.get(left)
        return int(remaining) if remaining is not None else 0
    async with redis.pipeline(transaction=True) as pipe:
        pipe.expire(finished, 24 * 3600)
        pipe.decr(left)
        _, remaining = await pipe.execute()
    return max(0, int(remaining))


class AlbumCollector:
    """Gathers the messages of one media group for `window_s` (updates are handled concurrently)."""

    def __init__(self, window_s: float = COLLECT_WINDOW_S):
        self.window_s = window_s
        self._groups: dict[tuple[int, str], list[Message]] = {}

    async def collect(self, message: Message) -> list[Message] | None:
        """The whole group for the first message's handler (after the window); None for the others."""
        key = (message.chat_id, str(message.media_group_id))
        if key in self._groups:
            self._groups[key].append(message)
            return None
        self._groups[key] = [message]
        await asyncio.sleep(self.window_s)
        return sorted(self._groups.pop(key), key=lambda m: m.message_id)
