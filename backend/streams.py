"""The consumer-group mechanics the worker and the notifier share.

Batched XREADGROUP with an outer deadline (BLOCK stays shorter than the socket timeout), groups
re-created on NOGROUP (Redis restarted empty), XAUTOCLAIM of stale entries with their delivery
counts, dead-lettering, and MINID trimming up to what every group has acknowledged.

Liveness, not only idleness: consumer names are stable (host + slot), and a process holds its name
by a lease in Redis (a random token, renewed and released only by its owner). A heartbeat on its
own timer, independent of the blocking read loop, renews the lease, resets the idle time of the
entries in hand (XCLAIM … JUSTID) and takes over at once the pending entries of any consumer whose
lease has lapsed: a killed process's work resumes within the lease time, not after `min_idle`.
XAUTOCLAIM after `min_idle` stays as the fallback for a consumer that is alive but hung. A process
that stalled past its lease notices it lost its name, takes a name again and keeps only the entries
nobody took over meanwhile.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import socket
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

from redis.asyncio import Redis
from redis.exceptions import ResponseError

from backend import keys
from backend.backoff import Backoff, wait_event
from backend.redis_conn import REDIS_DOWN
from backend.tasks import dead_letter_fields

log = logging.getLogger(__name__)

T = TypeVar("T")

MAX_SLOTS = 256

# KEYS: the lease. ARGV: our token, lease (ms). 1 renewed; 2 taken again (it was gone: Redis lost it,
# e.g. restarted empty, while we still held it by our own clock); 0 someone else holds it.
RENEW_LEASE = """
local holder = redis.call('GET', KEYS[1])
if holder == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
if not holder then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return 2
end
return 0
"""

# KEYS: the lease. ARGV: our token. Deletes the lease only while it is still ours.
RELEASE_LEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


@dataclass(frozen=True)
class Entry:
    stream: str
    entry_id: str
    fields: dict[Any, Any]
    deliveries: int = 1


async def retry_while_redis_down(
    call: Callable[[], Awaitable[T]], stopping: asyncio.Event, *, first_s: float = 1.0, max_s: float = 30.0
) -> T:
    """Await `call()` until Redis answers, backing off from `first_s` up to `max_s` between tries; a
    process may start before its Redis does. Gives up (raises) only once `stopping` is set."""
    backoff = Backoff(first_s, max_s)
    while True:
        try:
            return await call()
        except REDIS_DOWN as exc:
            if stopping.is_set():
                raise
            delay = backoff.next_delay()
            log.warning("Redis unavailable (%s); retrying in %.1f s", exc, delay)
            await wait_event(stopping, delay)


MIN_REDIS = (7, 0)


async def require_redis_7(redis: Redis) -> str:
    """Refuse to run on a Redis older than 7.0 (XINFO's lag and entries-read are 7.0 features); its version."""
    info = await redis.info("server")
    version = str(info.get("redis_version", "0"))
    if tuple(int(part) for part in version.split(".")[:2]) < MIN_REDIS:
        raise RuntimeError(f"Redis {version} is too old: repairbot needs Redis 7.0 or newer")
    return version


def is_nogroup(exc: BaseException) -> bool:
    return isinstance(exc, ResponseError) and "NOGROUP" in str(exc)


class Holder(Protocol):
    """What a consumer tells its group's heartbeat about the work in its hands."""

    def in_hand(self) -> list[Entry]:
        """Entries being worked on now (their ownership is kept)."""

    def room(self) -> int:
        """How many more entries it can take on now (0 while stopping or paused)."""

    def adopt(self, entry: Entry) -> None:
        """Start on an entry taken over from a consumer that died."""

    def taken_away(self, entries: list[Entry]) -> None:
        """Another consumer owns these now: stop working on them if that saves a duplicate."""


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
        lease_s: float = 10.0,
        refresh_s: float | None = None,
        holder: Holder | None = None,
    ):
        """
        :param streams: stream name -> where a freshly created group starts ("0" = everything, "$" = new only)
        :param role: part of the consumer name (`<host>-<role>-<slot>`)
        :param lease_s: how long the consumer name stays ours without a renewal; a dead process's
            entries are taken over once it lapses
        :param refresh_s: heartbeat period: lease renewal, ownership refresh, liveness check
            (default a third of the lease)
        :param holder: the consumer's work in hand; without one the heartbeat only renews the lease
        """
        self.redis = redis
        self.group = group
        self.streams = dict(streams)
        self.role = role
        self.dead_stream = dead_stream
        self.block_ms = block_ms
        self.call_timeout_s = call_timeout_s
        self.lease_s = lease_s
        self.refresh_s = refresh_s if refresh_s is not None else lease_s / 3
        self.holder = holder
        self.consumer = ""
        self._token = ""
        self._renewed_at = 0.0  # loop time at which our last successful renewal was *sent*
        self._name_lost = False
        self._former = ""  # our name before the current one: entries a late read gave it are ours too
        self._former_until = 0.0  # ...until its lease, no longer renewed, has surely lapsed
        self._heartbeat_task: asyncio.Task[None] | None = None
        self._reclaim_cursor: dict[str, str] = {}
        self._renew_lease = redis.register_script(RENEW_LEASE)
        self._release_lease = redis.register_script(RELEASE_LEASE)

    # --- identity ------------------------------------------------------------------------------
    @property
    def name_lost(self) -> bool:
        """True from the moment our lease may have lapsed until a name is ours again."""
        return self._name_lost or (bool(self._token) and self._now() - self._renewed_at >= self.lease_s)

    @staticmethod
    def _now() -> float:
        return asyncio.get_running_loop().time()

    def _lease_key(self, name: str) -> str:
        return keys.consumer_lease(self.group, name)

    async def acquire_name(self) -> str:
        """The first free `<host>-<role>-<slot>`: stable across restarts, never shared while alive.

        Starts the heartbeat that keeps the name (and the entries in hand) ours.
        """
        await self._take_a_name()
        if self._heartbeat_task is None or self._heartbeat_task.done():
            self._heartbeat_task = asyncio.create_task(self._heartbeat(), name=f"heartbeat-{self.consumer}")
        return self.consumer

    async def _take_a_name(self) -> None:
        host = socket.gethostname().split(".")[0] or "host"
        token = secrets.token_hex(16)
        lease_ms = int(self.lease_s * 1000)
        for slot in range(MAX_SLOTS):
            name = f"{host}-{self.role}-{slot}"
            sent = self._now()
            if await self._bounded(self.redis.set(self._lease_key(name), token, nx=True, px=lease_ms)):
                self.consumer, self._token, self._renewed_at, self._name_lost = name, token, sent, False
                return
        raise RuntimeError(f"no free consumer slot for {host}-{self.role}")

    async def _heartbeat(self) -> None:
        """Renew the lease, keep the entries in hand ours, take over the dead's: on its own timer."""
        delay = self.refresh_s
        while True:
            await asyncio.sleep(delay)
            delay = self.refresh_s
            try:
                if self.name_lost or not await self._renew():
                    await self._rejoin()
                if self.holder is not None:
                    former = self._former if self._now() < self._former_until else ""
                    taken = await self.keep_ownership(self.holder.in_hand(), former=former)
                    if taken:
                        self.holder.taken_away(taken)
                    claimed, next_lapse_s = await self.take_over_dead(self.holder.room())
                    for entry in claimed:
                        self.holder.adopt(entry)
                    delay = min(delay, next_lapse_s)
                    if not claimed and not self.holder.in_hand():
                        await self._back_to_a_lower_slot()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - Redis hiccups must not end the heartbeat
                log.warning("consumer %s heartbeat failed: %s", self.consumer, exc)
                delay = min(delay, 1.0)

    async def _renew(self) -> bool:
        """Extend our lease if it is still ours; False when another process holds the name now."""
        sent = self._now()
        outcome = int(
            await self._bounded(
                self._renew_lease(keys=[self._lease_key(self.consumer)], args=[self._token, int(self.lease_s * 1000)])
            )
        )
        if outcome == 0:
            return False
        if outcome == 2:
            log.warning("lease of consumer %s was gone from Redis (restarted empty?): taken again", self.consumer)
        self._renewed_at = sent
        return True

    async def _rejoin(self) -> None:
        """Our lease lapsed (a stall) or was taken: stop acting as that consumer and take a name again.

        Entries in hand that nobody took over meanwhile move to the new name; those another
        consumer owns now are handed back (the holder stops on them); pending entries left under
        the new name from an earlier life are adopted.
        """
        former, former_token = self.consumer, self._token
        self._name_lost = True
        log.warning("consumer %s lost its lease (stalled longer than %g s?): taking a name again", former, self.lease_s)
        await self._bounded(self._release_lease(keys=[self._lease_key(former)], args=[former_token]))
        await self._take_a_name()
        # Entries still under the old name are ours unless another process has taken that name since.
        log.info("consumer %s is now %s", former, self.consumer)
        if self.consumer != former and await self._bounded(self.redis.exists(self._lease_key(former))):
            former = ""
        self._former, self._former_until = former, self._now() + self.lease_s
        if self.holder is None:
            return
        in_hand = self.holder.in_hand()
        taken = await self.keep_ownership(in_hand, former=former)
        if taken:
            self.holder.taken_away(taken)
        held = {e.entry_id for e in in_hand}
        for entry in await self.read_own_pending():
            if entry.entry_id not in held:
                self.holder.adopt(entry)

    async def _back_to_a_lower_slot(self) -> None:
        """A process restarted while its old lease still held came up on a higher slot; once that lease
        has lapsed and its entries are taken over, it moves back while it holds nothing, so consumer
        names stay stable across restarts instead of piling up."""
        prefix, _, slot = self.consumer.rpartition("-")
        if not slot.isdigit() or int(slot) == 0 or not await self._holds_nothing(self.consumer):
            return
        for lower in range(int(slot)):
            name = f"{prefix}-{lower}"
            if not await self._holds_nothing(name):
                continue  # a dead one's entries: taken over first, by liveness
            token, sent = secrets.token_hex(16), self._now()
            if await self._bounded(self.redis.set(self._lease_key(name), token, nx=True, px=int(self.lease_s * 1000))):
                # The old lease is left to lapse, not released: a read still in flight under the old name
                # may hand it an entry, which the next heartbeat moves over (`_former` counts as ours).
                self._former, self.consumer, self._token, self._renewed_at = self.consumer, name, token, sent
                self._former_until = sent + self.lease_s
                log.info("consumer %s moved back to its slot %s", self._former, name)
                return

    async def _holds_nothing(self, name: str) -> bool:
        for stream in self.streams:
            try:
                pending = await self._bounded(
                    self.redis.xpending_range(stream, self.group, min="-", max="+", count=1, consumername=name)
                )
            except ResponseError:
                continue  # no group yet: nothing pending
            if pending:
                return False
        return True

    async def release_name(self) -> None:
        if self._heartbeat_task is not None:
            self._heartbeat_task.cancel()
            self._heartbeat_task = None
        if self.consumer and self._token:
            try:
                await self._bounded(self._release_lease(keys=[self._lease_key(self.consumer)], args=[self._token]))
            except Exception:  # noqa: BLE001 - best effort on the way out; the lease expires anyway
                pass

    # --- plumbing ------------------------------------------------------------------------------
    async def _bounded(self, awaitable: Any, extra_s: float = 0.0) -> Any:
        """Every Redis call gets an outer deadline, so a half-open socket can't hang a loop (and a
        cancellation is never swallowed, as `wait_for` can on 3.11: see backoff.wait_event)."""
        async with asyncio.timeout(self.call_timeout_s + extra_s):
            return await awaitable

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
            log.error(
                "group %s is missing: Redis lost its data (restarted empty?). Re-creating it; entries "
                "of %s that no consumer held are gone and nobody can tell their users. Run Redis with "
                "AOF (appendfsync always) to keep them",
                self.group,
                ", ".join(self.streams),
            )
            await self.ensure_groups()
            with contextlib.suppress(Exception):  # counted for the admins' alert (backend.alerts)
                await self._bounded(self.redis.hincrby(keys.DATA_LOST, self.group, 1))
            return await self._bounded(make_call(), extra_s)

    # --- reading -------------------------------------------------------------------------------
    async def read_new(self, count: int, *, block: bool = True) -> list[Entry]:
        """Up to `count` never-delivered entries across the streams (blocks up to block_ms).

        Nothing is read while our name may be lost: entries read then would sit under a name
        another process may be about to take.
        """
        if count <= 0:
            return []
        if self.name_lost:
            await asyncio.sleep(min(0.1, self.block_ms / 1000))
            return []
        block_ms = self.block_ms if block else None
        reply = await self._with_groups(
            lambda: self.redis.xreadgroup(
                self.group, self.consumer, {s: ">" for s in self.streams}, count=count, block=block_ms
            ),
            extra_s=self.block_ms / 1000.0,
        )
        return self._entries(reply)

    async def read_own_pending(self, count: int = 100, *, after: str = "0") -> list[Entry]:
        """Entries this consumer name was given before a restart and never acknowledged (those after `after`).

        Each entry read counts one more delivery, as XPENDING then says.
        """
        while True:
            reply = await self._with_groups(
                lambda after=after: self.redis.xreadgroup(
                    self.group, self.consumer, {s: after for s in self.streams}, count=count
                )
            )
            entries = self._entries(reply)
            for gone in (e for e in entries if not e.fields):  # trimmed away while pending: nothing left to do
                await self.ack(gone)
            kept = [e for e in entries if e.fields]
            if kept or not entries:
                return [await self._with_deliveries(e) for e in kept]
            after = entries[-1].entry_id

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

    async def keep_ownership(self, entries: list[Entry], *, former: str = "") -> list[Entry]:
        """Reset the idle time of entries still being worked on, so nobody reclaims them.

        Returns the entries another consumer owns now. An entry is ours when the pending list says
        so (or names `former`, our name before a lost lease). It is claimed again with min-idle
        set to the idle time just read: a consumer that took it meanwhile reset that, so the claim
        does nothing then (a compare-and-set on the idle time). An entry pending nowhere
        (acknowledged, trimmed, or Redis emptied) is left to its handler, which still publishes
        what it holds.
        """
        taken: list[Entry] = []
        ours = {self.consumer, former} - {""}
        for entry, owner, idle_ms in await self._owners(entries):
            if owner is None:
                continue
            if owner not in ours:
                taken.append(entry)
                continue
            claimed = await self._with_groups(
                lambda entry=entry, idle_ms=idle_ms: self.redis.xclaim(
                    entry.stream,
                    self.group,
                    self.consumer,
                    min_idle_time=idle_ms,
                    message_ids=[entry.entry_id],
                    justid=True,
                )
            )
            if not claimed:  # someone claimed it between our look and our claim
                taken += [e for e, now_owner, _ in await self._owners([entry]) if now_owner not in (None, *ours)]
        return taken

    async def _owners(self, entries: list[Entry]) -> list[tuple[Entry, str | None, int]]:
        """(entry, consumer holding it or None when it is pending nowhere, its idle ms) per entry."""
        if not entries:
            return []
        async with self.redis.pipeline(transaction=False) as pipe:
            for entry in entries:
                pipe.xpending_range(entry.stream, self.group, min=entry.entry_id, max=entry.entry_id, count=1)
            replies = await self._bounded(pipe.execute(raise_on_error=False))
        owners: list[tuple[Entry, str | None, int]] = []
        for entry, reply in zip(entries, replies):
            if isinstance(reply, Exception):
                if not is_nogroup(reply):
                    raise reply
                reply = []  # the group is gone (Redis emptied): nothing is pending anywhere
            if reply:
                owners.append((entry, _text(reply[0]["consumer"]), int(reply[0]["time_since_delivered"])))
            else:
                owners.append((entry, None, 0))
        return owners

    async def take_over_dead(self, room: int) -> tuple[list[Entry], float]:
        """Claim up to `room` pending entries of consumers whose lease has lapsed (they died).

        Returns the entries claimed and the seconds until the next lease of a consumer holding
        entries could lapse, so the heartbeat looks again right then. A consumer name with no lease
        at all is dead too (leases are how live processes say so). Each entry is claimed with
        min-idle equal to the idle time just read, so two live consumers never both take it.
        """
        claimed: list[Entry] = []
        next_lapse_s = self.refresh_s
        for stream in self.streams:
            try:
                consumers = await self._bounded(self.redis.xinfo_consumers(stream, self.group))
            except ResponseError:
                continue  # no stream or no group yet: nothing pending
            holding = [
                _text(c.get("name", ""))
                for c in consumers
                if int(c.get("pending") or 0) and _text(c.get("name", "")) != self.consumer
            ]
            if not holding:
                continue
            async with self.redis.pipeline(transaction=False) as pipe:
                for name in holding:
                    pipe.pttl(self._lease_key(name))
                ttls = await self._bounded(pipe.execute())
            for name, ttl_ms in zip(holding, ttls):
                ttl_ms = int(ttl_ms)
                if ttl_ms >= 0:  # alive (its lease has this long to go unless renewed)
                    next_lapse_s = min(next_lapse_s, ttl_ms / 1000 + 0.05)
                    continue
                if ttl_ms == -1 or room - len(claimed) <= 0:  # -1: a lease without expiry is not ours to judge
                    continue
                claimed += await self._claim_from(stream, name, room - len(claimed))
        return claimed, next_lapse_s

    async def _claim_from(self, stream: str, dead: str, count: int) -> list[Entry]:
        pending = await self._with_groups(
            lambda: self.redis.xpending_range(stream, self.group, min="-", max="+", count=count, consumername=dead)
        )
        claimed: list[Entry] = []
        for item in pending:
            entry_id = _text(item["message_id"])
            reply = await self._with_groups(
                lambda entry_id=entry_id, idle=int(item["time_since_delivered"]): self.redis.xclaim(
                    stream, self.group, self.consumer, min_idle_time=idle, message_ids=[entry_id]
                )
            )
            for claimed_id, fields in reply or []:
                if fields:
                    claimed.append(Entry(stream, _text(claimed_id), fields, int(item["times_delivered"]) + 1))
                else:  # trimmed away while pending: nothing left to do
                    await self.ack(Entry(stream, _text(claimed_id), {}))
        if claimed:
            log.warning(
                "took over %d entr%s of %s from %s, whose lease lapsed (it died)",
                len(claimed),
                "y" if len(claimed) == 1 else "ies",
                stream,
                dead,
            )
        return claimed

    async def prune_idle_consumers(self, idle_ms: int) -> None:
        """Forget consumer names that hold nothing and have been silent for `idle_ms` (gone for good)."""
        for stream in self.streams:
            try:
                consumers = await self._bounded(self.redis.xinfo_consumers(stream, self.group))
            except ResponseError:
                continue
            for consumer in consumers:
                name = _text(consumer.get("name", ""))
                if (
                    name != self.consumer
                    and not int(consumer.get("pending") or 0)
                    and int(consumer.get("idle") or 0) > idle_ms
                ):
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


@dataclass(frozen=True)
class ConsumerOptions:
    """How a consumer of a group reads, keeps its entries ours and backs off. The defaults are
    Settings' defaults; the composition root (backend.processes) fills them from Settings.

    :param dead_stream: where entries that can never be handled go
    :param block_ms: how long one XREADGROUP blocks (shorter than `call_timeout_s`)
    :param call_timeout_s: the outer deadline of every Redis call (the socket timeout)
    :param lease_s: how long our consumer name stays ours without a renewal
    :param min_idle_ms: an entry unacknowledged this long is stale (maintenance runs well within it)
    :param read_batch: entries read at most at once
    :param shutdown_grace_s: how long `stop` waits for the work in hand
    :param retry_backoff_s: the first wait while Redis is away (or between retries)
    :param retry_backoff_max_s: the longest such wait
    """

    dead_stream: str = "photo_repair_dead"
    block_ms: int = 2000
    call_timeout_s: float = 10.0
    lease_s: float = 10.0
    min_idle_ms: int = 60_000
    read_batch: int = 16
    shutdown_grace_s: float = 30.0
    retry_backoff_s: float = 1.0
    retry_backoff_max_s: float = 30.0

    @property
    def refresh_s(self) -> float:
        """The heartbeat period (Settings.ownership_refresh_s): lease renewal, idle reset, liveness check."""
        return min(self.lease_s / 3, self.min_idle_ms / 3000)


DEFAULT_OPTIONS = ConsumerOptions()


class StreamConsumer:
    """The life of a consumer of a group, which the worker and the notifier share: start, read,
    maintain, drain, stop.

    Start waits for Redis (7.0 or newer) and backs off while it is away, takes a consumer name, makes
    sure the groups exist and takes this name's own pending entries back. The loop runs `maintain()`
    every few seconds (well within `min_idle_ms`), reads no more than `free_slots()`, and backs off
    while Redis is away. `stop()` ends the loop; what is in hand gets `shutdown_grace_s` to finish and
    the rest stays pending for the next consumer. A subclass supplies `handle` (take entries on) and
    `maintain`, says what runs (`running`), and may `open` and `close` its own parts around it all.

    :param role: "worker" or "notifier", for the logs and the consumer name
    :param group: the consumer group
    :param streams: stream name -> where a freshly created group starts ("0" everything, "$" new only)
    :param options: how it reads, keeps its entries and backs off
    """

    def __init__(
        self,
        redis: Redis,
        *,
        role: str,
        group: str,
        streams: Mapping[str, str],
        options: ConsumerOptions = DEFAULT_OPTIONS,
    ) -> None:
        self.redis = redis
        self.role = role
        self.log = logging.getLogger(type(self).__module__)  # log lines name the worker or the notifier
        self.options = options
        self.min_idle_ms = options.min_idle_ms
        self.read_batch = options.read_batch
        self.shutdown_grace_s = options.shutdown_grace_s
        self.retry_backoff_s = options.retry_backoff_s
        self.retry_backoff_max_s = options.retry_backoff_max_s
        self._stopping = asyncio.Event()
        self._slot_freed = asyncio.Event()  # set when work in hand ends: the loop may read again
        self.group = ConsumerGroup(
            redis,
            group=group,
            streams=streams,
            role=role,
            dead_stream=options.dead_stream,
            block_ms=options.block_ms,
            call_timeout_s=options.call_timeout_s,
            lease_s=options.lease_s,
            refresh_s=options.refresh_s,
            holder=self,
        )

    # --- what a consumer supplies ------------------------------------------------------------------
    async def handle(self, entries: list[Entry]) -> None:
        """Take these entries on (they are ours until acknowledged)."""
        raise NotImplementedError

    async def maintain(self) -> None:
        """The periodic pass: stale entries taken over, streams trimmed, idle consumers forgotten."""
        raise NotImplementedError

    def running(self) -> list[asyncio.Task[None]]:
        """The tasks doing the work in hand, which `stop` waits for."""
        raise NotImplementedError

    def room(self) -> int:
        """How many more entries it can take on now (streams.Holder)."""
        raise NotImplementedError

    def in_hand(self) -> list[Entry]:
        """Entries being worked on now, which the heartbeat keeps ours (streams.Holder)."""
        raise NotImplementedError

    def adopt(self, entry: Entry) -> None:
        """Start on an entry taken over from a consumer that died (streams.Holder)."""
        raise NotImplementedError

    def taken_away(self, entries: list[Entry]) -> None:
        """Another consumer owns these now (streams.Holder)."""
        raise NotImplementedError

    async def free_slots(self) -> int:
        """How many entries to read now; the worker also looks whether the queue is paused."""
        return self.room()

    async def take_back_own_pending(self) -> None:
        """At start: the entries this name was given before a restart and never acknowledged."""
        await self.handle(await self._until_redis_answers(self.group.read_own_pending))

    def describe(self) -> str:
        """What the start-up log line says about it."""
        return ""

    async def open(self) -> None:
        """Start its own parts, before Redis is asked anything."""

    async def close(self) -> None:
        """Close its own parts, once the work in hand is done or handed back."""

    # --- the lifecycle -----------------------------------------------------------------------------
    def stop(self) -> None:
        self._stopping.set()

    async def run(self) -> None:
        try:
            await self.open()
            await self._until_redis_answers(lambda: require_redis_7(self.redis))
            await self._until_redis_answers(self.group.acquire_name)
            self.log.info("%s %s started (%s)", self.role, self.group.consumer, self.describe())
            await self._until_redis_answers(self.group.ensure_groups)
            await self.take_back_own_pending()
            await self._loop()
        except REDIS_DOWN:
            if not self._stopping.is_set():
                raise
            self.log.warning("%s stopped while Redis was unreachable", self.role)
        finally:
            await self._drain()
            await self.group.release_name()
            await self.close()
            self.log.info("%s %s stopped", self.role, self.group.consumer or "(no name yet)")

    async def _until_redis_answers(self, call: Callable[[], Awaitable[T]]) -> T:
        return await retry_while_redis_down(
            call, self._stopping, first_s=self.retry_backoff_s, max_s=self.retry_backoff_max_s
        )

    async def _loop(self) -> None:
        loop = asyncio.get_running_loop()
        maintain_every = max(0.5, min(10.0, self.min_idle_ms / 3000))  # well within min_idle
        next_maintenance = 0.0
        backoff = Backoff(self.retry_backoff_s, self.retry_backoff_max_s)
        while not self._stopping.is_set():
            try:
                if loop.time() >= next_maintenance:
                    next_maintenance = loop.time() + maintain_every  # first: a failing pass must not repeat at once
                    await self.maintain()
                self._slot_freed.clear()  # before looking, so a slot freed meanwhile still wakes us
                free = await self.free_slots()
                if free <= 0:  # read no more than we can keep owned
                    await wait_event(self._slot_freed, min(1.0, maintain_every))
                    continue
                await self.handle(await self.group.read_new(min(free, self.read_batch)))
                backoff.reset()
            except REDIS_DOWN as exc:
                delay = backoff.next_delay()
                self.log.warning("%s lost Redis (%s); retrying in %.1f s", self.role, exc, delay)
                await self._sleep(delay)
            except Exception as exc:  # noqa: BLE001 - the loop outlives any single bad moment
                if not is_nogroup(exc):  # Redis restarted empty: the group makes its groups again
                    self.log.exception("%s loop error: %s", self.role, exc)
                await self._sleep(backoff.next_delay())

    async def _sleep(self, seconds: float) -> None:
        await wait_event(self._stopping, seconds)

    async def _drain(self) -> None:
        tasks = self.running()
        if not tasks:
            return
        self.log.info("waiting up to %.0f s for %d task(s) in flight", self.shutdown_grace_s, len(tasks))
        _, unfinished = await asyncio.wait(tasks, timeout=self.shutdown_grace_s)
        for task in unfinished:
            task.cancel()
        if unfinished:
            await asyncio.wait(unfinished, timeout=5)
            self.log.warning(
                "handed back %d unfinished task(s): what they held stays pending for the next %s",
                len(unfinished),
                self.role,
            )
