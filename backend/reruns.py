""" "Other mode" runs once per photo and mode: a second press finds the first run instead of a new one.

The claim is taken before the task is queued (so two quick presses can't both queue), holds the
task id once queued, and is given back when intake refuses, so a later press may try again.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from redis.asyncio import Redis

PENDING = "pending"


def _key(input_key: str, mode: str) -> str:
    return f"repairbot:rerun:{input_key.rsplit(':', 1)[-1]}:{mode}"


class Reruns:
    def __init__(self, redis: Redis, ttl_s: int):
        self.redis = redis
        self.ttl_s = ttl_s

    async def existing(self, input_key: str, mode: str) -> str | None:
        """The task that already runs (or ran) this photo in this mode; "pending" while it is being queued."""
        value = await self.redis.get(_key(input_key, mode))
        return value.decode() if isinstance(value, bytes) else value

    async def run_once(self, input_key: str, mode: str, queue: Callable[[], Awaitable[str]]) -> tuple[bool, str]:
        """(True, new task id) after calling `queue`, or (False, the earlier task id) without calling it."""
        key = _key(input_key, mode)
        if not await self.redis.set(key, PENDING, nx=True, ex=self.ttl_s):
            return False, await self.existing(input_key, mode) or PENDING
        try:
            task_id = await queue()
        except BaseException:
            await self.redis.delete(key)
            raise
        await self.redis.set(key, task_id, ex=self.ttl_s)
        return True, task_id


# Failures another mode may get past (the photo reached ComfyUI and the workflow itself failed);
# a timeout or an outage is worth a Retry only.
OTHER_MODE_MAY_HELP = frozenset({"comfyui_rejected", "comfyui_failed", "output_invalid", "too_many_attempts"})
NO_RETRY = frozenset({"input_expired", "cancelled", "malformed_task", "bad_params", "unknown_mode"})


def retry_offers(error: str) -> tuple[bool, bool]:
    """(offer Retry, offer the other modes) under a failure with this error code."""
    return error not in NO_RETRY, error in OTHER_MODE_MAY_HELP
