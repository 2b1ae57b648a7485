"""Finished tasks' results as the worker stored them (`keys.result`), for the bots and senders.

An album's photos come back together and a button pressed on an old result needs its input and
output: both read the stored copy, kept for the blob lifetime, rather than the results stream.
"""

from __future__ import annotations

import logging
import re

from redis.asyncio import Redis

from backend import keys
from backend.tasks import MalformedRecord, Result

log = logging.getLogger(__name__)

_TASK_ID = re.compile(r"^[A-Za-z0-9_-]{8,64}$")


async def stored_result(redis: Redis, task_id: str) -> Result | None:
    """The task's result, or None when it isn't finished, has expired, or the id is not one of ours."""
    if not _TASK_ID.fullmatch(task_id):
        return None
    fields = await redis.hgetall(keys.result(task_id))
    if not fields:
        return None
    try:
        return Result.decode(fields)
    except MalformedRecord as exc:
        log.warning("stored result of %s is unreadable: %s", task_id, exc.reason)
        return None


async def stored_results(redis: Redis, task_ids: list[str]) -> list[Result]:
    """The finished ones among `task_ids`, in the given order."""
    found = [await stored_result(redis, task_id) for task_id in task_ids]
    return [result for result in found if result is not None]
