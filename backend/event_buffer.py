"""Progress events written in batches: every event emitted while a write is in flight joins the next.

Events are lossy by design (a progress bar may skip a step), so emitting never waits for Redis and
never fails the task. What it saves is round trips: the events of every task running at once (a
"started" and the progress steps of prefetched prompts) go out in one pipeline instead of one XADD
each, and a progress step still waiting to be written is replaced by the task's newer one.
"""

from __future__ import annotations

import asyncio
import logging

from redis.asyncio import Redis

from backend.tasks import Event

log = logging.getLogger(__name__)


class EventBuffer:
    def __init__(self, redis: Redis, stream: str, *, maxlen: int):
        self.redis = redis
        self.stream = stream
        self.maxlen = maxlen
        self._pending: list[Event] = []
        self._writer: asyncio.Task[None] | None = None

    def emit(self, event: Event) -> None:
        last = self._pending[-1] if self._pending else None
        if last is not None and last.task_id == event.task_id and last.state == event.state == "progress":
            self._pending[-1] = event  # only the newest step of a progress burst matters
        else:
            self._pending.append(event)
        if self._writer is None or self._writer.done():
            self._writer = asyncio.get_running_loop().create_task(self._write_all())

    async def flush(self) -> None:
        """Wait for what was emitted so far to be written (or dropped); for shutdown and tests."""
        while self._writer is not None and not self._writer.done():
            await asyncio.wait({self._writer})

    async def _write_all(self) -> None:
        await asyncio.sleep(0)  # let the events emitted in this same turn of the loop join
        while self._pending:
            batch, self._pending = self._pending, []
            try:
                async with self.redis.pipeline(transaction=False) as pipe:
                    for event in batch:
                        pipe.xadd(self.stream, event.encode(), maxlen=self.maxlen, approximate=True)
                    await pipe.execute()
            except Exception as exc:  # noqa: BLE001 - progress is lossy by design
                log.debug("dropped %d progress event(s): %s", len(batch), exc)
