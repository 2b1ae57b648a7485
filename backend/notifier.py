"""Delivers results and progress back into the chat each task came from.

Consumer group `notifiers` on the results stream and the events stream. Each reply channel's
platform has a registered Sender (the bots provide theirs; `cli` needs none: the submitting process
reads its result itself). Effectively once for the user: `delivered:<task_id>` is checked before a
send and set right after a successful one. Sender errors say what happens next: SendRetry (honour
retry-after, back off), SendPermanent (logged and dead-lettered); anything else is retried.
"""

from __future__ import annotations

import asyncio
import logging
import random
from typing import Protocol

from redis.asyncio import Redis

from backend import keys
from backend.settings import Settings
from backend.streams import REDIS_DOWN, ConsumerGroup, Entry, retry_while_redis_down
from backend.tasks import Event, MalformedRecord, Result

log = logging.getLogger(__name__)

SILENT_PLATFORMS = ("cli",)
MAINTENANCE_EVERY_S = 10.0


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


class Notifier:
    """Consumes results and events and hands them to the platform senders.

    :param senders: platform name -> Sender
    :param concurrency: sends in flight at once (different chats proceed in parallel)
    """

    def __init__(self, redis: Redis, settings: Settings, senders: dict[str, Sender], *, concurrency: int = 8):
        self.redis = redis
        self.settings = settings
        self.senders = senders
        self.group = ConsumerGroup(
            redis,
            group=settings.notifiers_group,
            streams={settings.results_stream: "0", settings.events_stream: "$"},
            role="notifier",
            dead_stream=settings.dead_stream,
            block_ms=settings.block_ms,
            call_timeout_s=settings.redis_socket_timeout_s,
        )
        self._slots = asyncio.Semaphore(concurrency)
        self._inflight: dict[str, tuple[Entry, asyncio.Task[None]]] = {}
        self._stopping = asyncio.Event()

    def stop(self) -> None:
        self._stopping.set()

    async def run(self) -> None:
        try:
            for sender in self.senders.values():
                await sender.start()
            await retry_while_redis_down(self.group.acquire_name, self.settings, self._stopping)
            log.info("notifier %s started (platforms: %s)", self.group.consumer, ", ".join(self.senders) or "none")
            await retry_while_redis_down(self.group.ensure_groups, self.settings, self._stopping)
            for entry in await retry_while_redis_down(self.group.read_own_pending, self.settings, self._stopping):
                await self._spawn(entry)
            await self._loop()
        except REDIS_DOWN:
            if not self._stopping.is_set():
                raise
            log.warning("notifier stopped while Redis was unreachable")
        finally:
            if self._inflight:
                await asyncio.wait([task for _, task in self._inflight.values()],
                                   timeout=self.settings.shutdown_grace_s)
            await self.group.release_name()
            for sender in self.senders.values():
                await sender.close()

    async def _loop(self) -> None:
        loop = asyncio.get_running_loop()
        next_maintenance = 0.0
        backoff = self.settings.retry_backoff_s
        while not self._stopping.is_set():
            try:
                if loop.time() >= next_maintenance:
                    await self._maintain()
                    next_maintenance = loop.time() + MAINTENANCE_EVERY_S
                await self._slots.acquire()
                self._slots.release()
                for entry in await self.group.read_new(self.settings.read_batch):
                    await self._spawn(entry)
                backoff = self.settings.retry_backoff_s
            except REDIS_DOWN as exc:
                log.warning("notifier lost Redis (%s); retrying in %.1f s", exc, backoff)
                await self._sleep(backoff)
                backoff = min(backoff * 2, self.settings.retry_backoff_max_s)
            except Exception as exc:  # noqa: BLE001 - the loop must outlive any single bad moment
                if "NOGROUP" in str(exc):
                    continue
                log.exception("notifier loop error: %s", exc)
                await self._sleep(backoff)

    async def _sleep(self, seconds: float) -> None:
        try:
            await asyncio.wait_for(self._stopping.wait(), timeout=seconds)
        except asyncio.TimeoutError:
            pass

    async def _maintain(self) -> None:
        """Keep slow sends ours, pick up what a dead notifier left behind, trim what all acknowledged."""
        if self._inflight:
            await self.group.keep_ownership([entry for entry, _ in self._inflight.values()])
        for entry in await self.group.reclaim_stale(self.settings.min_idle_ms):
            await self._spawn(entry)
        await self.group.trim_acknowledged(self.settings.results_stream)

    async def _spawn(self, entry: Entry) -> None:
        if entry.entry_id in self._inflight:
            return
        await self._slots.acquire()
        task = asyncio.create_task(self._handle(entry))
        self._inflight[entry.entry_id] = (entry, task)

        def done(_: asyncio.Task[None]) -> None:
            self._inflight.pop(entry.entry_id, None)
            self._slots.release()

        task.add_done_callback(done)

    async def _handle(self, entry: Entry) -> None:
        try:
            if entry.stream == self.settings.results_stream:
                await self._handle_result(entry)
            else:
                await self._handle_event(entry)
        except Exception as exc:  # noqa: BLE001 - left pending; reclaimed and retried later
            log.exception("could not handle %s %s: %s", entry.stream, entry.entry_id, exc)

    async def _handle_event(self, entry: Entry) -> None:
        """Progress is lossy by design: one try, then acknowledged whatever happened."""
        try:
            event = Event.decode(entry.fields)
            sender = self.senders.get(event.reply["platform"])
            if sender is not None and not await self.redis.exists(keys.delivered(event.task_id)):
                await sender.send_event(event)
        except MalformedRecord as exc:
            log.warning("dropping malformed event %s: %s", entry.entry_id, exc.reason)
        except Exception as exc:  # noqa: BLE001 - a lost progress update is fine
            log.info("progress update for %s not shown: %s", entry.entry_id, exc)
        await self.group.ack(entry)

    async def _handle_result(self, entry: Entry) -> None:
        try:
            result = Result.decode(entry.fields)
        except MalformedRecord as exc:
            await self.group.dead_letter(entry, reason=f"malformed result: {exc.reason}")
            return
        platform = result.reply["platform"]
        if platform in SILENT_PLATFORMS or await self.redis.exists(keys.delivered(result.task_id)):
            await self.group.ack(entry)
            return
        sender = self.senders.get(platform)
        if sender is None:
            await self.group.dead_letter(entry, reason=f"no sender for platform {platform}")
            return
        if entry.deliveries > self.settings.max_deliveries:
            await self.group.dead_letter(entry, reason="delivery failed too many times")
            return
        last_error = ""
        backoff = self.settings.retry_backoff_s
        for attempt in range(1, self.settings.send_retries + 1):
            try:
                await sender.send_result(result)
            except SendPermanent as exc:
                log.warning("result %s can't be delivered: %s", result.task_id, exc)
                await self.group.dead_letter(entry, reason=f"undeliverable: {exc}", last_error=str(exc))
                return
            except SendRetry as exc:
                last_error = str(exc)
                wait = exc.after_s if exc.after_s is not None else backoff
            except Exception as exc:  # noqa: BLE001 - unknown send errors are retried, then left pending
                last_error = f"{type(exc).__name__}: {exc}"
                wait = backoff
            else:
                await self.redis.set(keys.delivered(result.task_id), "1", ex=self.settings.delivered_ttl_s)
                await self.group.ack(entry)
                return
            log.info("send of %s failed (attempt %d): %s", result.task_id, attempt, last_error)
            await asyncio.sleep(min(wait, self.settings.retry_backoff_max_s) + random.uniform(0, 0.1))
            backoff = min(backoff * 2, self.settings.retry_backoff_max_s)
        log.warning("result %s left pending after %d tries: %s", result.task_id, attempt, last_error)
