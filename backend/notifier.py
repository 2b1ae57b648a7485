"""Delivers results and progress back into the chat each task came from.

Consumer group `notifiers` on the results stream and the events stream. Each reply channel's
platform has a registered Sender (the bots provide theirs; `cli` needs none: the submitting process
reads its result itself). Effectively once for the user: `delivered:<task_id>` is checked before a
send and set right after a successful one. Sender errors say what happens next: SendRetry (honour
retry-after, back off), SendPermanent (logged and dead-lettered); anything else is retried.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from typing import AsyncIterator, Protocol

from redis.asyncio import Redis

from backend import keys
from backend.redact import scrub
from backend.settings import Settings
from backend.streams import (
    REDIS_DOWN, ConsumerGroup, Entry, is_nogroup, require_redis_7, retry_while_redis_down,
)
from backend.tasks import Event, MalformedRecord, Result

log = logging.getLogger(__name__)

SILENT_PLATFORMS = ("cli",)


class SendRetry(Exception):
    """Try again later; `after_s` is the platform's retry-after when it gave one."""

    def __init__(self, detail: str = "", after_s: float | None = None):
        super().__init__(detail)
        self.after_s = after_s


class SendPermanent(Exception):
    """The chat can't be reached (blocked, deleted, forbidden): don't retry."""


class Sender(Protocol):
    """What a platform provides so the notifier can answer its users."""

    async def start(self) -> None: ...

    async def close(self) -> None: ...

    async def send_result(self, result: Result) -> None: ...

    async def send_event(self, event: Event) -> None: ...


class _TaskLock:
    """A lock per task id, dropped when its last user leaves."""

    def __init__(self) -> None:
        self.lock = asyncio.Lock()
        self.users = 0


class _Platform:
    """A sender plus whether it has started: a platform that is down at start-up is retried later."""

    def __init__(self, name: str, sender: Sender):
        self.name = name
        self.sender = sender
        self.started = False
        self._lock = asyncio.Lock()

    async def ensure_started(self) -> None:
        """Start the sender once; a failure becomes SendRetry, so the send is retried with backoff."""
        if self.started:
            return
        async with self._lock:
            if self.started:
                return
            try:
                await self.sender.start()
            except Exception as exc:  # noqa: BLE001 - the platform is unreachable for now
                raise SendRetry(f"{self.name} sender could not start: {type(exc).__name__}") from exc
            self.started = True


class Notifier:
    """Consumes results and events and hands them to the platform senders.

    :param senders: platform name -> Sender
    :param concurrency: sends in flight at once (different chats proceed in parallel)
    """

    def __init__(self, redis: Redis, settings: Settings, senders: dict[str, Sender], *, concurrency: int = 8):
        self.redis = redis
        self.settings = settings
        self.platforms = {name: _Platform(name, sender) for name, sender in senders.items()}
        self.concurrency = concurrency
        self.group = ConsumerGroup(
            redis,
            group=settings.notifiers_group,
            streams={settings.results_stream: "0", settings.events_stream: "$"},
            role="notifier",
            dead_stream=settings.dead_stream,
            block_ms=settings.block_ms,
            call_timeout_s=settings.redis_socket_timeout_s,
            lease_s=settings.consumer_lease_s,
            refresh_s=settings.ownership_refresh_s,
            holder=self,
        )
        self._inflight: dict[str, tuple[Entry, asyncio.Task[None]]] = {}
        self._task_locks: dict[str, _TaskLock] = {}
        self._slot_freed = asyncio.Event()
        self._warned_missing: set[str] = set()
        self._stopping = asyncio.Event()

    def stop(self) -> None:
        self._stopping.set()

    async def run(self) -> None:
        try:
            await retry_while_redis_down(lambda: require_redis_7(self.redis), self.settings, self._stopping)
            await retry_while_redis_down(self.group.acquire_name, self.settings, self._stopping)
            log.info("notifier %s started (platforms: %s)", self.group.consumer, ", ".join(self.platforms) or "none")
            for platform in self.platforms.values():
                with contextlib.suppress(SendRetry):
                    await platform.ensure_started()
            await retry_while_redis_down(self.group.ensure_groups, self.settings, self._stopping)
            for entry in await retry_while_redis_down(self.group.read_own_pending, self.settings, self._stopping):
                self._spawn(entry)
            await self._loop()
        except REDIS_DOWN:
            if not self._stopping.is_set():
                raise
            log.warning("notifier stopped while Redis was unreachable")
        finally:
            await self._drain()
            await self.group.release_name()
            for platform in self.platforms.values():
                if platform.started:
                    await platform.sender.close()

    async def _drain(self) -> None:
        """Let sends in flight finish within the grace period; the rest stay pending for the next notifier."""
        tasks = [task for _, task in self._inflight.values()]
        if not tasks:
            return
        _, unfinished = await asyncio.wait(tasks, timeout=self.settings.shutdown_grace_s)
        for task in unfinished:
            task.cancel()
        if unfinished:
            await asyncio.wait(unfinished, timeout=5)
            log.warning("handed back %d unsent result(s)", len(unfinished))

    async def _loop(self) -> None:
        loop = asyncio.get_running_loop()
        maintain_every = max(0.5, min(10.0, self.settings.min_idle_ms / 3000))  # well within min_idle
        next_maintenance = 0.0
        backoff = self.settings.retry_backoff_s
        while not self._stopping.is_set():
            try:
                if loop.time() >= next_maintenance:
                    next_maintenance = loop.time() + maintain_every
                    await self._maintain()
                self._slot_freed.clear()
                free = self.concurrency - len(self._inflight)
                if free <= 0:  # read no more than we can send, so nothing waits unrefreshed
                    with contextlib.suppress(asyncio.TimeoutError):
                        await asyncio.wait_for(self._slot_freed.wait(), timeout=1.0)
                    continue
                for entry in await self.group.read_new(min(free, self.settings.read_batch)):
                    self._spawn(entry)
                backoff = self.settings.retry_backoff_s
            except REDIS_DOWN as exc:
                log.warning("notifier lost Redis (%s); retrying in %.1f s", exc, backoff)
                await self._sleep(backoff)
                backoff = min(backoff * 2, self.settings.retry_backoff_max_s)
            except Exception as exc:  # noqa: BLE001 - the loop must outlive any single bad moment
                if not is_nogroup(exc):
                    log.exception("notifier loop error: %s", exc)
                await self._sleep(backoff)

    async def _sleep(self, seconds: float) -> None:
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), timeout=seconds)

    async def _maintain(self) -> None:
        """Keep slow sends ours, pick up what a dead notifier left behind, trim what all acknowledged."""
        free = self.concurrency - len(self._inflight)
        if free > 0:
            for entry in await self.group.reclaim_stale(self.settings.min_idle_ms, count=free):
                self._spawn(entry)
        await self.group.trim_acknowledged(self.settings.results_stream)
        await self.group.prune_idle_consumers(max(10 * self.settings.min_idle_ms, 3600 * 1000))

    # What the group's heartbeat keeps ours (streams.Holder); a dead notifier's entries come via `adopt`.
    def in_hand(self) -> list[Entry]:
        return [entry for entry, _ in self._inflight.values()]

    def room(self) -> int:
        return 0 if self._stopping.is_set() else max(0, self.concurrency - len(self._inflight))

    def adopt(self, entry: Entry) -> None:
        self._spawn(entry)

    def taken_away(self, entries: list[Entry]) -> None:
        for entry in entries:  # the send claim keeps two notifiers from both posting it
            log.warning("%s %s was taken over by another notifier while in hand here", entry.stream, entry.entry_id)

    def _spawn(self, entry: Entry) -> None:
        if entry.entry_id in self._inflight:
            return
        task = asyncio.create_task(self._handle(entry))
        self._inflight[entry.entry_id] = (entry, task)

        def done(_: asyncio.Task[None]) -> None:
            self._inflight.pop(entry.entry_id, None)
            self._slot_freed.set()

        task.add_done_callback(done)

    async def _handle(self, entry: Entry) -> None:
        try:
            if entry.stream == self.settings.results_stream:
                await self._handle_result(entry)
            else:
                await self._handle_event(entry)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - left pending; reclaimed and retried later
            log.error("could not handle %s %s: %s", entry.stream, entry.entry_id, scrub(str(exc)))

    @contextlib.asynccontextmanager
    async def _one_at_a_time(self, task_id: str) -> AsyncIterator[None]:
        """A task's progress and its result are sent in order, never a progress edit after the result."""
        holder = self._task_locks.setdefault(task_id, _TaskLock())
        holder.users += 1
        try:
            async with holder.lock:
                yield
        finally:
            holder.users -= 1
            if not holder.users:
                self._task_locks.pop(task_id, None)

    async def _handle_event(self, entry: Entry) -> None:
        """Progress is lossy by design: one try, then acknowledged whatever happened."""
        try:
            event = Event.decode(entry.fields)
            platform = self.platforms.get(event.reply["platform"])
            if platform is not None and platform.started:
                async with self._one_at_a_time(event.task_id):
                    if not await self.redis.exists(keys.delivered(event.task_id)):
                        await platform.sender.send_event(event)
        except MalformedRecord as exc:
            log.warning("dropping malformed event %s: %s", entry.entry_id, exc.reason)
        except REDIS_DOWN:
            raise
        except Exception as exc:  # noqa: BLE001 - a lost progress update is fine
            log.info("progress update for %s not shown: %s", entry.entry_id, scrub(str(exc)))
        await self.group.ack(entry)

    async def _handle_result(self, entry: Entry) -> None:
        try:
            result = Result.decode(entry.fields)
        except MalformedRecord as exc:
            await self.group.dead_letter(entry, reason=f"malformed result: {exc.reason}")
            return
        name = result.reply["platform"]
        if name in SILENT_PLATFORMS or await self.redis.exists(keys.delivered(result.task_id)):
            await self.group.ack(entry)
            return
        platform = self.platforms.get(name)
        if platform is None:
            # Another notifier of the group may serve this platform: it reclaims the entry after min_idle.
            if name not in self._warned_missing:
                self._warned_missing.add(name)
                log.warning("no %s sender here (token unset?): its results wait for a notifier that has one", name)
            return
        # Counted per real delivery round, not per XPENDING delivery: a notifier without this platform's
        # sender also takes the entry now and then (XAUTOCLAIM), and that must not use up its chances.
        rounds = await self.redis.incr(keys.send_rounds(result.task_id))
        await self.redis.expire(keys.send_rounds(result.task_id), self.settings.delivered_ttl_s)
        if rounds > self.settings.max_deliveries:
            await self.group.dead_letter(entry, reason="delivery failed too many times")
            return
        async with self._one_at_a_time(result.task_id):
            await self._deliver(entry, result, platform)

    async def _deliver(self, entry: Entry, result: Result, platform: _Platform) -> None:
        last_error = ""
        backoff = self.settings.retry_backoff_s
        for attempt in range(1, self.settings.send_retries + 1):
            try:
                await platform.ensure_started()
                await platform.sender.send_result(result)
            except SendPermanent as exc:
                reason = scrub(str(exc))
                log.warning("result %s can't be delivered: %s", result.task_id, reason)
                await self.group.dead_letter(entry, reason=f"undeliverable: {reason}", last_error=reason)
                return
            except SendRetry as exc:
                last_error = scrub(str(exc))
                wait = exc.after_s if exc.after_s is not None else backoff
            except Exception as exc:  # noqa: BLE001 - unknown send errors are retried, then left pending
                last_error = scrub(f"{type(exc).__name__}: {exc}")
                wait = backoff
            else:
                await self.redis.set(keys.delivered(result.task_id), "1", ex=self.settings.delivered_ttl_s)
                await self.group.ack(entry)
                log.info("delivered %s result of %s to %s", result.status, result.task_id, platform.name)
                return
            log.info("send of %s failed (attempt %d): %s", result.task_id, attempt, last_error)
            await asyncio.sleep(min(wait, self.settings.retry_backoff_max_s) + random.uniform(0, 0.1))
            backoff = min(backoff * 2, self.settings.retry_backoff_max_s)
        log.warning("result %s left pending after %d tries: %s", result.task_id, attempt, last_error)
