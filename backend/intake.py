"""Intake: what every bot calls to turn a photo into a queued task.

It refuses early and politely (paused, limits, bad image), stores the normalised image as a blob,
XADDs the task and answers with the task's place in line. Limits live here, not in the bots, so
Telegram and Discord users share them: K tasks queued or running per user, N per hour, a global cap.

One platform event, one task: a bot passes an event key (a chat message, an interaction's
attachment) and intake claims it in the same Lua script that XADDs the task, so an update the
platform delivers twice is answered with the first task, never queued again. Once the XADD has
committed, nothing that fails afterwards makes the photo look refused: the task will be answered.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from redis.asyncio import Redis

from backend import images, intake_many, keys, metrics
from backend.admin import estimate_wait
from backend.blobs import BlobStore, BlobTooLarge
from backend.errors import Refused
from backend.redis_conn import REDIS_DOWN
from backend.replies import Reply, reply_json
from backend.stream_names import DEFAULT_STREAMS, StreamNames
from backend.task_handle import TaskState, state_of
from backend.tasks import MalformedRecord, Task, decode_reply, new_task_id, now_ms
from backend.workflows import Workflows

if TYPE_CHECKING:
    from backend.backlog import Backlog

log = logging.getLogger(__name__)

HOUR_MS = 3600 * 1000
MB = 1024 * 1024
MAX_EVENT_KEY = 200
# Photos up to this size are checked inline (a 512 px JPEG takes ~0.4 ms, less than the hop to a
# thread and back); bigger ones in a thread, so the bot's event loop never stalls on a 12 MP scan.
INLINE_IMAGE_BYTES = 256 * 1024
EVENT_TURN_MS = 30_000  # longer than a 20 MB download and its normalisation take

# KEYS: the event's claim, its turn. ARGV: token, turn TTL (ms). {2, task id, reply}: queued already;
# {1}: the turn is ours; {0}: another delivery holds it. One round trip per look.
TAKE_TURN_SCRIPT = """
local first = redis.call('HGET', KEYS[1], 'task_id')
if first then return {2, first, redis.call('HGET', KEYS[1], 'reply')} end
if redis.call('SET', KEYS[2], ARGV[1], 'NX', 'PX', ARGV[2]) then return {1} end
return {0}
"""

RELEASE_IF_OWNER = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


@dataclass(frozen=True)
class Submitted:
    """A queued task. `duplicate`: the event was queued before, and this is that first task, whose
    reply channel (`reply`) is where the user was answered; `finished`: its result is out already, so
    there is nothing to say again."""

    task_id: str
    position: int
    eta_s: int
    duplicate: bool = False
    reply: Reply | None = None  # None when the first task's channel could not be read back
    finished: bool = False


# KEYS: the task's hash, the tasks stream, and optionally the event's idempotency key.
# ARGV: task id, hash TTL (s), event TTL (s), user, mode, submitted_at, reply (JSON), then the entry's
# field/value pairs. Returns {0, first task id} when the event was queued before, else {1, entry id, ordinal}:
# the claim, the task's bookkeeping and its stream entry are one step, so a crash leaves all or nothing.
ENQUEUE_SCRIPT = """
if KEYS[3] then
  local first = redis.call('HGET', KEYS[3], 'task_id')
  if first then return {0, first} end
end
local entry = {}
for i = 8, #ARGV do entry[#entry + 1] = ARGV[i] end
local id = redis.call('XADD', KEYS[2], '*', unpack(entry))
local info = redis.call('XINFO', 'STREAM', KEYS[2])
local ordinal = 0
for i = 1, #info, 2 do
  if info[i] == 'entries-added' then ordinal = info[i + 1] end
end
redis.call('HSET', KEYS[1], 'user', ARGV[4], 'state', 'queued', 'mode', ARGV[5], 'submitted_at', ARGV[6],
           'ordinal', ordinal, 'entry_id', id)
redis.call('EXPIRE', KEYS[1], ARGV[2])
if KEYS[3] then
  redis.call('HSET', KEYS[3], 'task_id', ARGV[1], 'reply', ARGV[7])
  redis.call('EXPIRE', KEYS[3], ARGV[3])
end
return {1, id, ordinal}
"""


# KEYS: the user's active set, the user's recent zset. ARGV: task id, now (ms), an hour (ms),
# max active, max per hour, TTL (s), exempt (0/1). Returns 0 reserved, 1 too many active, 2 hourly cap.
RESERVE_SCRIPT = """
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', tonumber(ARGV[2]) - tonumber(ARGV[3]))
if ARGV[7] == '0' then
  if redis.call('SCARD', KEYS[1]) >= tonumber(ARGV[4]) then return 1 end
  if redis.call('ZCARD', KEYS[2]) >= tonumber(ARGV[5]) then return 2 end
end
redis.call('SADD', KEYS[1], ARGV[1])
redis.call('EXPIRE', KEYS[1], ARGV[6])
redis.call('ZADD', KEYS[2], ARGV[2], ARGV[1])
redis.call('EXPIRE', KEYS[2], math.floor(tonumber(ARGV[3]) / 1000))
return 0
"""


class Intake:
    """Validates, stores and enqueues photos for any platform.

    :param streams: the stream and group names (tasks go on `tasks_stream`)
    :param parallel: how many photos run at once (ComfyUI instances times WORKER_CONCURRENCY), for the wait
    :param default_mode: the mode of a user who has not chosen one
    :param max_image_bytes: a larger photo is refused
    :param max_image_pixels: a larger image is shrunk to this many pixels
    :param max_image_pixels_ceiling: past this many pixels an image is refused, not shrunk
    :param queue_cap: photos are refused while this many tasks wait or run
    :param user_max_active: photos of one user queued or running at once
    :param user_max_per_hour: photos one user may send in an hour
    :param blob_ttl_s: how long a task's bookkeeping and a user's counters are kept
    :param idempotency_ttl_s: how long a chat event is remembered, so a redelivery is not queued again
    """

    def __init__(
        self,
        redis: Redis,
        blobs: BlobStore,
        workflows: Workflows,
        *,
        streams: StreamNames = DEFAULT_STREAMS,
        parallel: int = 1,
        default_mode: str = "person",
        max_image_bytes: int = 20 * 1024 * 1024,
        max_image_pixels: int = 40_000_000,
        max_image_pixels_ceiling: int = 150_000_000,
        queue_cap: int = 500,
        user_max_active: int = 3,
        user_max_per_hour: int = 30,
        blob_ttl_s: int = 24 * 3600,
        idempotency_ttl_s: int = 48 * 3600,
    ):
        self.redis = redis
        self.streams = streams
        self.parallel = parallel
        self.fallback_mode = default_mode
        self.max_image_bytes = max_image_bytes
        self.max_image_pixels = max_image_pixels
        self.max_image_pixels_ceiling = max_image_pixels_ceiling
        self.queue_cap = queue_cap
        self.user_max_active = user_max_active
        self.user_max_per_hour = user_max_per_hour
        self.blob_ttl_s = blob_ttl_s
        self.idempotency_ttl_s = idempotency_ttl_s
        self.blobs = blobs
        self.workflows = workflows
        self.backlog: Backlog | None = None  # set by Services: where photos over the concurrent cap wait
        self._reserve = redis.register_script(RESERVE_SCRIPT)
        self._enqueue_script = redis.register_script(ENQUEUE_SCRIPT)
        self._release_turn = redis.register_script(RELEASE_IF_OWNER)
        self._take_turn = redis.register_script(TAKE_TURN_SCRIPT)

    # The one call for a chat event's photos, one or many (backend.intake_many): a method of Intake.
    submit_many = intake_many.submit_many

    @metrics.counting_refusals
    def check_size(self, size: int | None) -> None:
        """Refuse by the size a platform declares, before downloading anything."""
        images.check_size(size, self.max_image_bytes)

    @metrics.counting_refusals
    async def check_open(
        self, user: str, *, exempt: bool = False, count: int = 1, event_key: str | None = None
    ) -> None:
        """Refuse when paused, when the queue is full, or when `user` is over a limit for `count` more.

        Everything it looks at is read in one round trip. With the `event_key` of a photo that another
        delivery of the same event is queueing (or queued) nothing is refused: `submit` answers it with
        that delivery's task, and the place it holds must not turn this one into a refusal."""
        try:
            await self._check_open(user, exempt=exempt, count=count)
        except Refused:
            if event_key is None or not await self._other_delivery(event_key):
                raise

    async def _other_delivery(self, event_key: str) -> bool:
        checked = _checked_event_key(event_key)
        return bool(await self.redis.exists(keys.event_claim(checked), keys.event_turn(checked)))

    async def _check_open(self, user: str, *, exempt: bool, count: int) -> None:
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.exists(keys.PAUSED)
            pipe.xinfo_groups(self.streams.tasks_stream)
            pipe.xlen(self.streams.tasks_stream)
            if not exempt:
                pipe.scard(keys.user_active(user))
                pipe.zcount(keys.user_recent(user), now_ms() - HOUR_MS, "+inf")
            replies = await pipe.execute(raise_on_error=False)
        for index, reply in enumerate(replies):
            if isinstance(reply, Exception) and index != 1:  # XINFO GROUPS fails while there is no stream
                raise reply
        paused, groups, length = replies[:3]
        if paused:
            raise Refused("paused")
        depth = _depth(groups, int(length), self.streams.workers_group)
        if depth + count > self.queue_cap:
            raise Refused("queue_full", detail=f"queue depth {depth}")
        if exempt:
            return
        active, recent = (int(reply) for reply in replies[3:5])
        if active + count > self.user_max_active:
            raise Refused("too_many_active", limit=self.user_max_active)
        if recent + count > self.user_max_per_hour:
            raise Refused("rate_limited", limit=self.user_max_per_hour)

    @metrics.counting_refusals
    async def submit(
        self,
        data: bytes,
        *,
        mode: str,
        reply: Reply,
        user: str,
        params: dict[str, Any] | None = None,
        exempt: bool = False,
        event_key: str | None = None,
    ) -> Submitted:
        """Check, normalise, store and enqueue one photo; raises Refused with a stable code.

        :param event_key: the platform event this photo came in (see `keys.event_claim`); an event
            queued before gets its first task back (`duplicate=True`), without limits or a second run
        """
        checked_params = self.workflows.get(mode).check_params(params)
        return await self._once_per_event(
            event_key,
            lambda key: self._submit(
                data, mode=mode, reply=reply, user=user, params=checked_params, exempt=exempt, event_key=key
            ),
        )

    async def _once_per_event(
        self, event_key: str | None, enqueue: Callable[[str | None], Awaitable[Submitted]]
    ) -> Submitted:
        """`enqueue` (given the event key to claim with the XADD), unless a delivery of this event was
        queued before or is being queued now: then that first task is the answer."""
        if event_key is None:
            return await enqueue(None)
        async with self._sole_delivery(event_key) as first:
            if first is not None:
                return first
            return await enqueue(event_key)

    async def _submit(
        self,
        data: bytes,
        *,
        mode: str,
        reply: Reply,
        user: str,
        params: dict[str, Any],
        exempt: bool,
        event_key: str | None = None,
    ) -> Submitted:
        await self.check_open(user, exempt=exempt)
        task_id = new_task_id()
        async with self._reserved(user, task_id, exempt=exempt) as reservation:
            limits = {"max_bytes": self.max_image_bytes, "max_pixels": self.max_image_pixels}
            if len(data) <= INLINE_IMAGE_BYTES:  # a phone photo's check takes well under a millisecond
                prepared = images.prepare_input(data, **limits)
            else:
                prepared = await asyncio.to_thread(images.prepare_input, data, **limits)
            try:
                input_key = await self.blobs.put("in", prepared.data)
            except BlobTooLarge as exc:
                raise Refused("too_large", detail=str(exc), max_mb=self.max_image_bytes // MB) from None
            submitted = await self._enqueue(
                task_id,
                input_key,
                mode=mode,
                reply=reply,
                user=user,
                params=params,
                event_key=event_key,
                reservation=reservation,
                digest=images.content_digest(prepared.data),
            )
            if submitted.duplicate:  # a second delivery of the event raced us to the XADD: its task stands
                await self.blobs.delete(input_key)
            return submitted

    @contextlib.asynccontextmanager
    async def _sole_delivery(self, event_key: str) -> AsyncIterator[Submitted | None]:
        """Deliveries of one event take turns: a second one waits while the first is being queued, then
        gets its task (rather than a refusal for the place the first one holds). The turn is a hint
        with a short TTL, so a delivery that crashed holding it delays a redelivery, never blocks it;
        the claim in the enqueue script is what keeps one task per event."""
        checked = _checked_event_key(event_key)
        turn = keys.event_turn(checked)
        token = new_task_id()
        deadline = asyncio.get_running_loop().time() + EVENT_TURN_MS / 1000
        while True:
            outcome = await self._take_turn(keys=[keys.event_claim(checked), turn], args=[token, EVENT_TURN_MS])
            if int(outcome[0]) == 2:  # queued already
                task_id = outcome[1].decode() if isinstance(outcome[1], bytes) else str(outcome[1])
                yield await self._first_task(task_id, outcome[2] if len(outcome) > 2 else None)
                return
            if int(outcome[0]) == 1:
                break
            if asyncio.get_running_loop().time() > deadline:
                log.warning("event %s: the other delivery's turn outlived its TTL; queueing anyway", event_key)
                break
            await asyncio.sleep(0.05)
        try:
            yield None
        finally:
            await self._release_turn(keys=[turn], args=[token])

    async def claimed(self, event_key: str) -> Submitted | None:
        """The task an event was already queued as, with its place in line now; None if it never was."""
        first = await self.redis.hmget(keys.event_claim(_checked_event_key(event_key)), ["task_id", "reply"])
        if not first or first[0] is None:
            return None
        task_id = first[0].decode() if isinstance(first[0], bytes) else str(first[0])
        return await self._first_task(task_id, first[1])

    async def _first_task(self, task_id: str, raw_reply: Any) -> Submitted:
        try:
            reply: Reply | None = decode_reply(raw_reply)
        except MalformedRecord:
            reply = None
        ordinal, state = await self.redis.hmget(keys.task(task_id), ["ordinal", "state"])
        if state_of(state) in (TaskState.DONE, TaskState.NOT_FOUND):  # answered already (or its record expired)
            return Submitted(task_id, 0, 0, duplicate=True, reply=reply, finished=True)
        position, eta = await self._place(int(ordinal or 0))
        return Submitted(task_id, position, eta, duplicate=True, reply=reply)

    @metrics.counting_refusals
    async def resubmit(
        self,
        input_key: str,
        *,
        mode: str,
        reply: Reply,
        user: str,
        exempt: bool = False,
        event_key: str | None = None,
        sent_at: int | None = None,
    ) -> Submitted:
        """Run an already stored input again (the "Other mode" button); limits apply as for a new photo.
        `event_key` names the button press, so a press delivered twice is one task (as for `submit`).
        `sent_at` (ms): when the user sent it, if earlier than now (a photo that waited in the backlog),
        so its caption's time is the whole wait."""
        self.workflows.get(mode)
        return await self._once_per_event(
            event_key,
            lambda key: self._resubmit(
                input_key, mode=mode, reply=reply, user=user, exempt=exempt, event_key=key, sent_at=sent_at
            ),
        )

    async def _resubmit(
        self,
        input_key: str,
        *,
        mode: str,
        reply: Reply,
        user: str,
        exempt: bool,
        event_key: str | None = None,
        sent_at: int | None = None,
    ) -> Submitted:
        await self.check_open(user, exempt=exempt)
        if await self.blobs.get(input_key) is None:
            raise Refused("input_expired")
        task_id = new_task_id()
        async with self._reserved(user, task_id, exempt=exempt) as reservation:
            return await self._enqueue(
                task_id,
                input_key,
                mode=mode,
                reply=reply,
                user=user,
                params={},
                event_key=event_key,
                reservation=reservation,
                sent_at=sent_at,
            )

    @contextlib.asynccontextmanager
    async def _reserved(self, user: str, task_id: str, *, exempt: bool) -> AsyncIterator[_Reservation]:
        """Take one of the user's places atomically (no burst of photos can slip past the limits);
        given back if the photo is refused before it is queued, never once its XADD has committed."""
        outcome = await self._reserve(
            keys=[keys.user_active(user), keys.user_recent(user)],
            args=[
                task_id,
                now_ms(),
                HOUR_MS,
                self.user_max_active,
                self.user_max_per_hour,
                self.blob_ttl_s,
                int(exempt),
            ],
        )
        if outcome == 1:
            raise Refused("too_many_active", limit=self.user_max_active)
        if outcome == 2:
            raise Refused("rate_limited", limit=self.user_max_per_hour)
        reservation = _Reservation()
        try:
            yield reservation
        except BaseException:
            if not reservation.committed:
                await self._give_back(user, task_id)
            raise
        if not reservation.committed:  # the event was queued before: this place was never used
            await self._give_back(user, task_id)

    async def _give_back(self, user: str, task_id: str) -> None:
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.srem(keys.user_active(user), task_id)
            pipe.zrem(keys.user_recent(user), task_id)
            await pipe.execute()

    async def _enqueue(
        self,
        task_id: str,
        input_key: str,
        *,
        mode: str,
        reply: Reply,
        user: str,
        params: dict[str, Any],
        event_key: str | None = None,
        reservation: _Reservation | None = None,
        digest: str = "",
        sent_at: int | None = None,
    ) -> Submitted:
        """Claim, bookkeeping and stream entry in one script, so a fast worker never races the bookkeeping
        and a crash never leaves a claimed event without its task. After the commit only the place in
        line is left to compute, and a failure there gives a best-effort place, not an error."""
        task = Task(task_id=task_id, mode=mode, input=input_key, reply=reply, user=user, params=params, digest=digest)
        if sent_at is not None and sent_at < task.submitted_at:
            task = dataclasses.replace(task, submitted_at=sent_at)
        script_keys = [keys.task(task_id), self.streams.tasks_stream]
        if event_key is not None:
            script_keys.append(keys.event_claim(_checked_event_key(event_key)))
        entry = [part for pair in task.encode().items() for part in pair]
        args = [
            task_id,
            self.blob_ttl_s,
            self.idempotency_ttl_s,
            user,
            mode,
            task.submitted_at,
            reply_json(reply),
            *entry,
        ]
        try:
            outcome = await self._enqueue_script(keys=script_keys, args=args)
        except REDIS_DOWN:
            # The reply may be what was lost: the task's hash is written with the entry, so it tells.
            if not await self.redis.exists(keys.task(task_id)):
                raise
            log.warning("task %s was queued though Redis did not confirm it", task_id)
            outcome = [
                1,
                await self.redis.hget(keys.task(task_id), "entry_id"),
                await self.redis.hget(keys.task(task_id), "ordinal"),
            ]
        if int(outcome[0]) == 0:
            first = outcome[1].decode() if isinstance(outcome[1], bytes) else str(outcome[1])
            return await self._first_task(first, await self.redis.hget(script_keys[2], "reply"))
        if reservation is not None:
            reservation.committed = True
        metrics.intake_accepted(reply.platform, mode)
        position, eta = await self._place(int(outcome[2] or 0))
        return Submitted(task_id, position, eta, reply=reply)

    async def _place(self, ordinal: int) -> tuple[int, int]:
        """Place in line and wait; best effort: the task is queued whatever this says."""
        try:
            return await estimate_wait(self.redis, ordinal, streams=self.streams, parallel=self.parallel)
        except Exception as exc:  # noqa: BLE001 - a queued photo must not be answered with an error
            log.warning("place in line unknown for ordinal %d: %s", ordinal, exc)
            return 1, 0

    async def default_mode(self, user: str) -> str:
        """The user's chosen mode, else the bot's default."""
        stored = await self.redis.get(keys.user_mode(user))
        mode = stored.decode() if isinstance(stored, bytes) else stored
        return mode if mode in self.workflows else self.fallback_mode

    async def set_default_mode(self, user: str, mode: str) -> None:
        self.workflows.get(mode)
        await self.redis.set(keys.user_mode(user), mode)


class _Reservation:
    """Whether the reserved place was used by a committed XADD (then it is the worker's to free)."""

    committed = False


def _depth(groups: Any, length: int, group: str) -> int:
    """Tasks waiting or running, from XINFO GROUPS (an error reply: no stream yet) and XLEN."""
    if isinstance(groups, Exception):
        return length
    for info in groups:
        name = info.get("name")
        if (name.decode() if isinstance(name, bytes) else name) == group:
            lag = info.get("lag")
            return int(length if lag is None else lag) + int(info.get("pending") or 0)
    return length


def _checked_event_key(event_key: str) -> str:
    if not event_key or len(event_key) > MAX_EVENT_KEY:
        raise ValueError(f"event key must be 1..{MAX_EVENT_KEY} characters")
    return event_key
