"""Admin core: the numbers operators and both bots show, dead letters, pause and cancel.

Status comes from constant-time commands (XLEN, XINFO GROUPS / CONSUMERS, the XPENDING summary), so
asking is cheap even with a long queue. Cancel only raises a flag: the worker that owns the task sees
it, skips a queued task, deletes a prompt waiting inside ComfyUI, or interrupts a running one.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import ResponseError

from backend import keys
from backend.redact import redact_url
from backend.replies import PLATFORMS
from backend.stream_names import DEFAULT_STREAMS, StreamNames
from backend.task_handle import TaskHandle, TaskState
from backend.tasks import DeadLetter, MalformedRecord, Result, Task, now_ms

DEFAULT_RUN_S = 10.0
DEAD_PAGE = 1000


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


async def group_info(redis: Redis, stream: str, group: str) -> dict[str, Any] | None:
    """XINFO GROUPS entry for one group, or None when the stream or group does not exist yet."""
    try:
        groups = await redis.xinfo_groups(stream)
    except ResponseError:
        return None
    for info in groups:
        if _text(info.get("name", "")) == group:
            return dict(info)
    return None


async def average_run_s(redis: Redis) -> float:
    recent = await redis.lrange(keys.RUN_TIMES, 0, 49)
    if not recent:
        return DEFAULT_RUN_S
    return sum(int(x) for x in recent) / len(recent) / 1000.0


async def estimate_wait(redis: Redis, ordinal: int, *, streams: StreamNames, parallel: int = 1) -> tuple[int, int]:
    """(place in line, seconds) for the task that was the stream's `ordinal`-th entry, read in one
    round trip.

    Place = tasks in flight + entries not yet delivered up to and including this one; the wait
    spreads that over the `parallel` photos that run at once, at the recent average run time.
    """
    async with redis.pipeline(transaction=False) as pipe:
        pipe.xinfo_groups(streams.tasks_stream)
        pipe.xlen(streams.tasks_stream)
        pipe.lrange(keys.RUN_TIMES, 0, 49)
        groups, stream_len, recent = await pipe.execute(raise_on_error=False)
    for reply in (stream_len, recent):
        if isinstance(reply, Exception):
            raise reply
    info = None
    if not isinstance(groups, Exception):
        info = next((g for g in groups if _text(g.get("name", "")) == streams.workers_group), None)
    pending = int(info.get("pending") or 0) if info else 0
    entries_read = info.get("entries-read") if info else 0
    if entries_read is None:
        lag = info.get("lag") if info else None
        entries_read = max(ordinal - (lag if lag is not None else int(stream_len)), 0)
    undelivered = max(ordinal - int(entries_read), 0)
    position = max(pending + undelivered, 1)
    parallel = max(1, parallel)
    average_s = sum(int(x) for x in recent) / len(recent) / 1000.0 if recent else DEFAULT_RUN_S
    eta = math.ceil(position / parallel) * average_s
    return position, int(math.ceil(eta))


@dataclass(frozen=True)
class RetryOutcome:
    ok: bool
    task_id: str = ""
    detail: str = ""


@dataclass(frozen=True)
class WorkerStatus:
    name: str
    pending: int  # entries in its hands
    idle_s: int


@dataclass(frozen=True)
class ComfyUIStatus:
    url: str  # credentials removed
    healthy: bool
    queue_running: int
    queue_pending: int


@dataclass(frozen=True)
class QueueStatus:
    """The status numbers (`repairbot status`, /queue); `to_json()` is `status --json`'s contract (DESIGN.md)."""

    queued: int
    running: int
    dead: int
    paused: bool
    oldest_pending_s: int
    avg_run_ms: int
    to_notify: int
    # Results parked by a notifier that has no sender for their platform, by platform.
    waiting_for_sender: dict[str, int] = field(default_factory=dict)
    workers: list[WorkerStatus] = field(default_factory=list)
    comfyui: list[ComfyUIStatus] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        """Integers, a paused boolean, and lists of objects for the workers and ComfyUI instances."""
        return asdict(self)


@dataclass(frozen=True)
class Stats:
    """Throughput and run-time percentiles over a window (`repairbot stats`, /stats)."""

    window_s: int
    completed: int
    failed: int
    cancelled: int
    per_minute: list[int]  # results finished in each minute of the window, oldest first
    throughput_per_min: float
    p50_s: float
    p90_s: float
    p99_s: float

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


class Admin:
    """Operator actions and numbers; `comfy_clients` (ComfyUIClient objects) add instance health.

    :param streams: the stream and group names (default: Settings' defaults)
    :param blob_ttl_s: how long a retried task's bookkeeping and a cancel flag are kept
    """

    def __init__(
        self,
        redis: Redis,
        comfy_clients: Iterable[Any] = (),
        *,
        streams: StreamNames = DEFAULT_STREAMS,
        blob_ttl_s: int = 24 * 3600,
    ):
        self.redis = redis
        self.comfy_clients = list(comfy_clients)
        self.streams = streams
        self.blob_ttl_s = blob_ttl_s

    # --- numbers -----------------------------------------------------------------------------
    async def status(self) -> QueueStatus:
        s = self.streams
        info = await group_info(self.redis, s.tasks_stream, s.workers_group)
        notifier_info = await group_info(self.redis, s.results_stream, s.notifiers_group)
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.xlen(s.tasks_stream)
            pipe.xlen(s.dead_stream)
            pipe.exists(keys.PAUSED)
            for platform in PLATFORMS:
                pipe.xlen(keys.waiting_results(s.results_stream, platform))
            tasks_len, dead, paused, *waiting = await pipe.execute()
        lag = info.get("lag") if info else tasks_len
        running = int(info.get("pending") or 0) if info else 0
        oldest_age = 0
        workers: list[WorkerStatus] = []
        if info is not None:
            summary = await self.redis.xpending(s.tasks_stream, s.workers_group)
            oldest = summary.get("min")
            if oldest:
                oldest_ms = int(_text(oldest).split("-")[0])
                oldest_age = max(0, (now_ms() - oldest_ms) // 1000)
            for consumer in await self.redis.xinfo_consumers(s.tasks_stream, s.workers_group):
                workers.append(
                    WorkerStatus(
                        name=_text(consumer.get("name", "")),
                        pending=int(consumer.get("pending") or 0),
                        idle_s=int(consumer.get("idle") or 0) // 1000,
                    )
                )
        to_notify = int(notifier_info.get("lag") or 0) + int(notifier_info.get("pending") or 0) if notifier_info else 0
        return QueueStatus(
            queued=int(lag if lag is not None else tasks_len),
            running=running,
            dead=int(dead),
            paused=bool(paused),
            oldest_pending_s=int(oldest_age),
            avg_run_ms=int(await average_run_s(self.redis) * 1000),
            to_notify=to_notify,
            waiting_for_sender={p: int(n) for p, n in zip(PLATFORMS, waiting) if n},
            workers=workers,
            comfyui=await self.comfyui_health(),
        )

    async def comfyui_health(self) -> list[ComfyUIStatus]:
        async def one(client: Any) -> ComfyUIStatus:
            healthy = await client.health()
            running: list[str] = []
            pending: list[str] = []
            if healthy:
                try:
                    running, pending = await client.queue()
                except Exception:  # noqa: BLE001 - a flaky instance is reported, not fatal
                    healthy = False
            return ComfyUIStatus(redact_url(client.base_url), healthy, len(running), len(pending))

        return list(await asyncio.gather(*(one(c) for c in self.comfy_clients)))

    async def stats(self, window_s: int = 3600) -> Stats:
        """Throughput and run-time percentiles over the last `window_s`, with per-minute counts."""
        now = now_ms()
        start = now - window_s * 1000
        entries = await self.redis.zrangebyscore(keys.DONE_LOG, start, "+inf", withscores=True)
        minutes = max(1, window_s // 60)
        per_minute = [0] * minutes
        run_times: list[int] = []
        counts = {"ok": 0, "failed": 0, "cancelled": 0}
        for member, score in entries:
            _, status, run_ms = _text(member).rsplit(":", 2)
            counts[status] = counts.get(status, 0) + 1
            index = min(minutes - 1, int((score - start) // 60000))
            per_minute[index] += 1
            if status == "ok":
                run_times.append(int(run_ms))
        run_times.sort()

        def percentile(p: float) -> float:
            if not run_times:
                return 0.0
            rank = min(len(run_times) - 1, max(0, math.ceil(p / 100 * len(run_times)) - 1))
            return round(run_times[rank] / 1000.0, 2)

        total = sum(counts.values())
        return Stats(
            window_s=window_s,
            completed=counts.get("ok", 0),
            failed=counts.get("failed", 0),
            cancelled=counts.get("cancelled", 0),
            per_minute=per_minute,
            throughput_per_min=round(total / minutes, 2),
            p50_s=percentile(50),
            p90_s=percentile(90),
            p99_s=percentile(99),
        )

    # --- dead letters ------------------------------------------------------------------------
    async def dead_letters(self, limit: int = 10) -> list[DeadLetter]:
        entries = await self.redis.xrevrange(self.streams.dead_stream, count=limit)
        return [DeadLetter.from_entry(entry_id, fields) for entry_id, fields in entries]

    async def _find_dead(self, ident: str) -> DeadLetter | None:
        if "-" in ident and ident.replace("-", "").isdigit():
            entries = await self.redis.xrange(self.streams.dead_stream, ident, ident)
            return DeadLetter.from_entry(*entries[0]) if entries else None
        # By task id: newest first, a page at a time, back to the oldest dead letter if need be.
        newest = "+"
        while True:
            page = await self.redis.xrevrange(self.streams.dead_stream, max=newest, min="-", count=DEAD_PAGE)
            for entry_id, fields in page:
                letter = DeadLetter.from_entry(entry_id, fields)
                if letter.task_id == ident:
                    return letter
            if len(page) < DEAD_PAGE:
                return None
            newest = "(" + _text(page[-1][0])

    async def retry_dead(self, ident: str) -> RetryOutcome:
        """Put a dead task back on the task stream (or a dead result back on the results stream)."""
        letter = await self._find_dead(ident)
        if letter is None:
            return RetryOutcome(False, detail="no such dead letter")
        s = self.streams
        try:
            if letter.source == s.results_stream:
                result = Result.decode(letter.fields)
                await self._requeue(letter, s.results_stream, result.encode(), result.task_id)
                return RetryOutcome(True, task_id=result.task_id)
            task = Task.decode(letter.fields)
        except MalformedRecord as exc:
            return RetryOutcome(False, task_id=letter.task_id, detail=f"cannot retry a malformed entry: {exc.reason}")
        tid = task.task_id
        # As intake does it: the task's bookkeeping (state=queued) is written before its stream entry, in
        # the same transaction, so a fast worker never finds the entry without it.
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.delete(keys.result(tid), keys.cancelled(tid), keys.delivered(tid), keys.send_rounds(tid))
            pipe.sadd(keys.user_active(task.user), tid)
            pipe.hdel(keys.task(tid), "handed_back")  # a fresh start: earlier hand-backs are not this run's
            pipe.hset(keys.task(tid), mapping={"state": TaskState.QUEUED, "user": task.user, "mode": task.mode})
            pipe.expire(keys.task(tid), self.blob_ttl_s)
            pipe.xadd(s.tasks_stream, task.encode())
            pipe.xdel(s.dead_stream, letter.entry_id)
            pipe.xinfo_stream(s.tasks_stream)
            replies = await pipe.execute()
        entry_id, info = replies[-3], replies[-1]
        await self.redis.hset(
            keys.task(tid), mapping={"ordinal": int(info.get("entries-added") or 0), "entry_id": entry_id}
        )
        return RetryOutcome(True, task_id=tid)

    async def _requeue(self, letter: DeadLetter, stream: str, fields: dict[str, str], task_id: str) -> None:
        """Append the result again and drop the dead letter, in one transaction. Its delivery marks go
        first: `delivered` would make the notifier skip it, and the send-rounds counter, already past
        the limit, would dead-letter it again at once without a send."""
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.delete(keys.delivered(task_id), keys.send_rounds(task_id))
            pipe.xadd(stream, fields)
            pipe.xdel(self.streams.dead_stream, letter.entry_id)
            await pipe.execute()

    async def purge_dead(self) -> int:
        count = int(await self.redis.xlen(self.streams.dead_stream))
        await self.redis.delete(self.streams.dead_stream)
        return count

    # --- pause / resume ----------------------------------------------------------------------
    async def pause(self) -> None:
        await self.redis.set(keys.PAUSED, str(int(time.time())))

    async def resume(self) -> None:
        await self.redis.delete(keys.PAUSED)

    # --- for the bots --------------------------------------------------------------------------
    async def cancel(self, task_id: str, *, user: str | None = None) -> bool:
        """Flag a task as cancelled (its owner, or anyone when `user` is None). False if too late."""
        return await TaskHandle(self.redis, task_id).cancel(user=user, flag_ttl_s=self.blob_ttl_s)

    async def cancel_user(self, user: str) -> int:
        """Cancel every task of `user` that is queued or running; returns how many were flagged."""
        members = await self.redis.smembers(keys.user_active(user))
        flagged = 0
        for task_id in members:
            if await self.cancel(_text(task_id), user=user):
                flagged += 1
        return flagged
