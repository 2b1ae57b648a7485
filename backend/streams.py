"""The consumer-group mechanics the worker and the notifier share.

Batched XREADGROUP with an outer deadline (BLOCK stays shorter than the socket timeout), groups
re-created on NOGROUP (Redis restarted empty), XAUTOCLAIM of stale entries with their delivery
counts, XCLAIM … JUSTID to keep ownership of long work, dead-lettering, and MINID trimming up to what
every group has acknowledged. Consumer names are stable (host + slot); a lease in Redis keeps two
live processes from ever sharing one.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from dataclasses import dataclass
from typing import Any, Mapping

from redis.asyncio import Redis
from redis import exceptions as redis_errors
from redis.exceptions import ResponseError

from backend import keys
from backend.tasks import dead_letter_fields

log = logging.getLogger(__name__)

LEASE_S = 30
MAX_SLOTS = 256


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


@dataclass(frozen=True)
class Entry:
    stream: str
    entry_id: str
    fields: dict[Any, Any]
    deliveries: int = 1


# redis-py's ConnectionError and TimeoutError are not the builtin ones: name both families.
REDIS_DOWN = (ConnectionError, OSError, asyncio.TimeoutError, redis_errors.ConnectionError, redis_errors.TimeoutError)


async def retry_while_redis_down(call: Any, settings: Any, stopping: asyncio.Event) -> Any:
    """Await `call()` until Redis answers, backing off; a process may start before its Redis does."""
    backoff = settings.retry_backoff_s
    while True:
        try:
            return await call()
        except REDIS_DOWN as exc:
            if stopping.is_set():
                raise
            log.warning("Redis unavailable (%s); retrying in %.1f s", exc, backoff)
            try:
                await asyncio.wait_for(stopping.wait(), timeout=backoff)
            except asyncio.TimeoutError:
                pass
            backoff = min(backoff * 2, settings.retry_backoff_max_s)


MIN_REDIS = (7, 0)


async def require_redis_7(redis: Redis) -> None:
    """Refuse to run on a Redis older than 7.0: XINFO's lag and entries-read are 7.0 features."""
    info = await redis.info("server")
    version = str(info.get("redis_version", "0"))
    if tuple(int(part) for part in version.split(".")[:2]) < MIN_REDIS:
        raise RuntimeError(f"Redis {version} is too old: repairbot needs Redis 7.0 or newer")


def is_nogroup(exc: BaseException) -> bool:
    return isinstance(exc, ResponseError) and "NOGROUP" in str(exc)


class ConsumerGroup:
    """One consumer of one group over one or more streams."""

    def __init__(
        self,
        redis: Redis,
        *,
        group: str,
        streams: Mapping[str, str],
        role: str,
        dead_stream: str,
        block_ms: int = 2000,
        call_timeout_s: float = 10.0,
    ):
        """
        :param streams: stream name -> where a freshly created group starts ("0" = everything, "$" = new only)
        :param role: part of the consumer name (`<host>-<role>-<slot>`)
        """
        self.redis = redis
        self.group = group
        self.streams = dict(streams)
        self.role = role
        self.dead_stream = dead_stream
        self.block_ms = block_ms
        self.call_timeout_s = call_timeout_s
        self.consumer = ""
        self._lease_task: asyncio.Task[None] | None = None
        self._reclaim_cursor: dict[str, str] = {}

    # --- identity ------------------------------------------------------------------------------
    async def acquire_name(self) -> str:
        """The first free `<host>-<role>-<slot>`: stable across restarts, never shared while alive."""
        host = socket.gethostname().split(".")[0] or "host"
        for slot in range(MAX_SLOTS):
            name = f"{host}-{self.role}-{slot}"
            if await self.redis.set(keys.consumer_lease(self.group, name), "1", nx=True, ex=LEASE_S):
                self.consumer = name
                self._lease_task = asyncio.create_task(self._renew_lease(), name=f"lease-{name}")
                return name
        raise RuntimeError(f"no free consumer slot for {host}-{self.role}")

    async def _renew_lease(self) -> None:
        while True:
            await asyncio.sleep(LEASE_S / 3)
            try:
                await self._bounded(self.redis.set(keys.consumer_lease(self.group, self.consumer), "1", ex=LEASE_S))
            except Exception as exc:  # noqa: BLE001 - Redis hiccups must not end the lease loop
                log.warning("could not renew consumer lease %s: %s", self.consumer, exc)

    async def release_name(self) -> None:
        if self._lease_task is not None:
            self._lease_task.cancel()
            self._lease_task = None
        if self.consumer:
            try:
                await self._bounded(self.redis.delete(keys.consumer_lease(self.group, self.consumer)))
            except Exception:  # noqa: BLE001 - best effort on the way out; the lease expires anyway
                pass

    # --- plumbing ------------------------------------------------------------------------------
    async def _bounded(self, awaitable: Any, extra_s: float = 0.0) -> Any:
        """Every Redis call gets an outer deadline, so a half-open socket can't hang a loop."""
        return await asyncio.wait_for(awaitable, timeout=self.call_timeout_s + extra_s)

    async def ensure_groups(self) -> None:
        for stream, start in self.streams.items():
            try:
                await self._bounded(self.redis.xgroup_create(stream, self.group, id=start, mkstream=True))
                log.info("created group %s on %s", self.group, stream)
            except ResponseError as exc:
                if "BUSYGROUP" not in str(exc):
                    raise

    async def _with_groups(self, make_call: Any, extra_s: float = 0.0) -> Any:
        try:
            return await self._bounded(make_call(), extra_s)
        except ResponseError as exc:
            if not is_nogroup(exc):
                raise
            log.warning("group %s is missing (Redis emptied?): re-creating it", self.group)
            await self.ensure_groups()
            return await self._bounded(make_call(), extra_s)

    # --- reading -------------------------------------------------------------------------------
    async def read_new(self, count: int, *, block: bool = True) -> list[Entry]:
        """Up to `count` never-delivered entries across the streams (blocks up to block_ms)."""
        if count <= 0:
            return []
        block_ms = self.block_ms if block else None
        reply = await self._with_groups(
            lambda: self.redis.xreadgroup(
                self.group, self.consumer, {s: ">" for s in self.streams}, count=count, block=block_ms
            ),
            extra_s=self.block_ms / 1000.0,
        )
        return self._entries(reply)

    async def read_own_pending(self, count: int = 100) -> list[Entry]:
        """Entries this consumer name was given before a restart and never acknowledged."""
        reply = await self._with_groups(
            lambda: self.redis.xreadgroup(self.group, self.consumer, {s: "0" for s in self.streams}, count=count)
        )
        entries = self._entries(reply)
        for gone in (e for e in entries if not e.fields):  # trimmed away while pending: nothing left to do
            await self.ack(gone)
        return [await self._with_deliveries(e) for e in entries if e.fields]

    @staticmethod
    def _entries(reply: Any) -> list[Entry]:
        entries: list[Entry] = []
        if isinstance(reply, dict):  # RESP3 shape
            reply = [(k, v[0] if v and isinstance(v[0], list) else v) for k, v in reply.items()]
        for stream, items in reply or []:
            for entry_id, fields in items:
                entries.append(Entry(_text(stream), _text(entry_id), fields or {}))
        return entries

    async def _with_deliveries(self, entry: Entry) -> Entry:
        info = await self._bounded(
            self.redis.xpending_range(entry.stream, self.group, min=entry.entry_id, max=entry.entry_id, count=1)
        )
        deliveries = int(info[0]["times_delivered"]) if info else entry.deliveries
        return Entry(entry.stream, entry.entry_id, entry.fields, deliveries)

    async def reclaim_stale(self, min_idle_ms: int, count: int = 16) -> list[Entry]:
        """Take over up to `count` entries another consumer has held for `min_idle_ms` (it died or hung).

        XAUTOCLAIM scans a bounded slice of the pending list per call; the cursor it returns is kept,
        so successive calls walk the whole list even when the first entries are busy, not stale.
        """
        claimed: list[Entry] = []
        for stream in self.streams:
            cursor = self._reclaim_cursor.get(stream, "0-0")
            reply = await self._with_groups(
                lambda stream=stream, cursor=cursor: self.redis.xautoclaim(
                    stream, self.group, self.consumer, min_idle_ms, start_id=cursor, count=count
                )
            )
            self._reclaim_cursor[stream] = _text(reply[0]) if reply else "0-0"
            for entry_id, fields in reply[1] if len(reply) > 1 else []:
                if fields:
                    claimed.append(await self._with_deliveries(Entry(stream, _text(entry_id), fields)))
        return claimed

    async def keep_ownership(self, entries: list[Entry]) -> list[Entry]:
        """Reset the idle time of entries still being worked on, so nobody reclaims them.

        Only entries still ours are touched (XCLAIM with min-idle 0 would otherwise take back one
        that another consumer already reclaimed); those no longer ours are returned.
        """
        lost: list[Entry] = []
        by_stream: dict[str, list[Entry]] = {}
        for entry in entries:
            by_stream.setdefault(entry.stream, []).append(entry)
        for stream, held in by_stream.items():
            pending = await self._with_groups(
                lambda stream=stream, held=held: self.redis.xpending_range(
                    stream, self.group, min=min(e.entry_id for e in held), max="+", count=10_000,
                    consumername=self.consumer,
                )
            )
            ours = {_text(item["message_id"]) for item in pending}
            still_ours = [e.entry_id for e in held if e.entry_id in ours]
            lost += [e for e in held if e.entry_id not in ours]
            if still_ours:
                await self._with_groups(
                    lambda stream=stream, ids=still_ours: self.redis.xclaim(
                        stream, self.group, self.consumer, min_idle_time=0, message_ids=ids, justid=True
                    )
                )
        return lost

    async def prune_idle_consumers(self, idle_ms: int) -> None:
        """Forget consumer names that hold nothing and have been silent for `idle_ms` (gone for good)."""
        for stream in self.streams:
            try:
                consumers = await self._bounded(self.redis.xinfo_consumers(stream, self.group))
            except ResponseError:
                continue
            for consumer in consumers:
                name = _text(consumer.get("name", ""))
                if name != self.consumer and not int(consumer.get("pending") or 0) \
                        and int(consumer.get("idle") or 0) > idle_ms:
                    await self._bounded(self.redis.xgroup_delconsumer(stream, self.group, name))
                    log.info("forgot idle consumer %s of %s", name, self.group)

    # --- finishing -----------------------------------------------------------------------------
    async def ack(self, entry: Entry) -> None:
        await self._with_groups(lambda: self.redis.xack(entry.stream, self.group, entry.entry_id))

    async def dead_letter(self, entry: Entry, *, reason: str, last_error: str = "") -> None:
        """Move an entry to the dead-letter stream and acknowledge it, atomically."""
        fields = dead_letter_fields(
            entry.fields,
            source=entry.stream,
            entry_id=entry.entry_id,
            reason=reason,
            deliveries=entry.deliveries,
            last_error=last_error,
        )
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.xadd(self.dead_stream, fields)
            pipe.xack(entry.stream, self.group, entry.entry_id)
            await self._bounded(pipe.execute())
        log.warning("dead-lettered %s %s: %s", entry.stream, entry.entry_id, reason)

    async def trim_acknowledged(self, stream: str) -> None:
        """XTRIM MINID up to the oldest entry some group still needs; never a plain MAXLEN."""
        try:
            groups = await self._bounded(self.redis.xinfo_groups(stream))
        except ResponseError:
            return
        if not groups:
            return
        floor: tuple[int, int] | None = None
        for info in groups:
            needed = _text(info.get("last-delivered-id") or "0-0")
            if int(info.get("pending") or 0):
                summary = await self._bounded(self.redis.xpending(stream, _text(info["name"])))
                if summary.get("min"):  # it may have emptied since XINFO
                    needed = _text(summary["min"])
            ms, _, seq = needed.partition("-")
            point = (int(ms), int(seq or 0))
            floor = point if floor is None or point < floor else floor
        if floor and floor > (0, 0):
            await self._bounded(self.redis.xtrim(stream, minid=f"{floor[0]}-{floor[1]}", approximate=True))
