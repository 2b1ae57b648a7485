"""A queued task seen from outside the worker, in the spirit of arq's Job: where it stands, its
result (waiting for it if need be) and a way to cancel it.

The task's hash (`keys.task`) holds its state, the stored result (`keys.result`) its outcome, and a
cancel flag (`keys.cancelled`) is what the worker looks for; only this module reads them for the
bots and the CLI, so no caller spells a key or a state string.
"""

from __future__ import annotations

import asyncio
import contextlib
from enum import StrEnum

from redis.asyncio import Redis

from backend import keys
from backend.stored_results import stored_result
from backend.tasks import MalformedRecord, Result

CANCEL_FLAG_TTL_S = 24 * 3600  # longer than any task waits; the worker reads the flag before and while it runs
WAKE_S = 1.0  # how long one blocking read of the results stream waits before the stored result is read again


class TaskState(StrEnum):
    """The `state` field of a task's hash, as intake (its enqueue script writes "queued"), the
    executor and the publisher write it."""

    QUEUED = "queued"  # on the tasks stream, not yet handed to ComfyUI (a retry or a backlog re-run also)
    IN_COMFYUI = "in_comfyui"  # uploaded and prompted: running, or waiting inside ComfyUI behind others
    DONE = "done"  # its result is written (ok, failed or cancelled: see the result's status)
    NOT_FOUND = "not_found"  # never queued, or finished so long ago that its record expired (never stored)


def state_of(raw: bytes | str | None) -> TaskState:
    """The state a hash field holds; an unknown or missing value reads as NOT_FOUND."""
    value = raw.decode() if isinstance(raw, bytes) else raw
    try:
        return TaskState(value) if value else TaskState.NOT_FOUND
    except ValueError:
        return TaskState.NOT_FOUND


class TaskHandle:
    """One task by id: `status()`, `result(timeout)`, `cancel()`.

    :param redis: the connection the task was queued through (any process's will do)
    :param task_id: the id intake answered with
    :param results_stream: the stream results are published on; `result()` follows it to wake up
        as soon as the result is out instead of polling
    """

    def __init__(self, redis: Redis, task_id: str, *, results_stream: str = "photo_repair_results"):
        self.redis = redis
        self.task_id = task_id
        self.results_stream = results_stream

    async def status(self) -> TaskState:
        return state_of(await self.redis.hget(keys.task(self.task_id), "state"))

    async def finished(self) -> Result | None:
        """The stored result, or None while it is not finished (or after it expired)."""
        return await stored_result(self.redis, self.task_id)

    async def result(self, timeout: float | None = None, *, stop: asyncio.Event | None = None) -> Result | None:
        """Wait for the result; raises TimeoutError after `timeout` s (MalformedRecord for a stored result
        that can't be read), returns None once `stop` is set.

        The results stream's last id is read before the stored result is looked at, and the stream
        is followed from there: the publisher writes both in one transaction, so a result that comes
        between the two reads is still seen on the stream."""
        async with asyncio.timeout(timeout):
            last = await self.redis.xrevrange(self.results_stream, count=1)
            cursor = last[0][0] if last else "0-0"
            while stop is None or not stop.is_set():
                stored = await self.redis.hgetall(keys.result(self.task_id))
                if stored:
                    return Result.decode(stored)  # MalformedRecord if unreadable: waiting longer won't mend it
                read = await self.redis.xread({self.results_stream: cursor}, count=100, block=int(WAKE_S * 1000))
                for _, entries in read or []:
                    for entry_id, fields in entries:
                        cursor = entry_id
                        if fields.get(b"task_id", b"").decode() == self.task_id:
                            with contextlib.suppress(MalformedRecord):
                                return Result.decode(fields)
        return None

    async def cancel(self, *, user: str | None = None, flag_ttl_s: int = CANCEL_FLAG_TTL_S) -> bool:
        """Ask the worker to drop the task (its owner `user` may; anyone when None). False when it is
        not this user's, already finished, or unknown: nothing was flagged then."""
        owner, state = await self.redis.hmget(keys.task(self.task_id), ["user", "state"])
        if owner is None or state_of(state) is TaskState.DONE:
            return False
        if user is not None and (owner.decode() if isinstance(owner, bytes) else str(owner)) != user:
            return False
        await self.redis.set(keys.cancelled(self.task_id), "1", ex=flag_ttl_s)
        return True
