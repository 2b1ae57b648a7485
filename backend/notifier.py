"""Delivers results and progress back into the chat each task came from.

Consumer group `notifiers` on the results stream and the events stream. Each reply channel's
platform has a registered Sender (the bots provide theirs; `cli` needs none: the submitting process
reads its result itself). Effectively once for the user: a result is sent under a cross-process send
claim (`backend.delivery`), `delivered:<task_id>` is checked under that claim and set right after a
successful send, and the senders record each part of a result before sending it. Sender errors say
what happens next: SendRetry (wait out the retry-after in full, back off), SendPermanent (logged and
dead-lettered); anything else is retried. A delivery round whose every retry failed counts against
MAX_DELIVERIES; one cut short by a notifier crash counts against MAX_INTERRUPTED_DELIVERIES, so a
notifier killed at random never dead-letters a healthy result.

Each chat has its own queue: its entries go out in order, and its waits hold up no other chat. A
result for a platform this notifier has no sender for waits in that platform's waiting stream
(`<results stream>:waiting:<platform>`) until a notifier with that sender starts and takes it back.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
from collections.abc import Mapping, Sequence
from typing import Protocol

from redis.asyncio import Redis

from backend import keys, metrics
from backend.backoff import Backoff, jittered
from backend.delivery import ACQUIRED, DELIVERED, SENT, SendClaim, SendClaims
from backend.logs import about_task
from backend.redact import scrub
from backend.redis_conn import REDIS_DOWN
from backend.replies import DiscordReply, TelegramReply, user_lang
from backend.streams import DEFAULT_OPTIONS, ConsumerOptions, Entry, StreamConsumer
from backend.tasks import Event, MalformedRecord, Result, decode_reply
from backend.texts import text

log = logging.getLogger(__name__)

SILENT_PLATFORMS = ("cli",)
HELD_PER_SLOT = 16  # entries kept read (and owned) per platform-call slot, across chats
CLAIM_POLL_S = 0.25
MOVE_BACK_BATCH = 100

# KEYS: a platform's waiting stream, the results stream. ARGV: how many. Moves the oldest entries back,
# atomically, so two notifiers taking them back at once never move one twice.
MOVE_BACK_SCRIPT = """
local entries = redis.call('XRANGE', KEYS[1], '-', '+', 'COUNT', ARGV[1])
for _, entry in ipairs(entries) do
  redis.call('XADD', KEYS[2], '*', unpack(entry[2]))
  redis.call('XDEL', KEYS[1], entry[1])
end
return #entries
"""


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


class _ChatQueue:
    """Entries for one chat, sent in order by one task of their own."""

    def __init__(self) -> None:
        self.entries: collections.deque[Entry] = collections.deque()
        self.task: asyncio.Task[None] | None = None


class Notifier(StreamConsumer):
    """Consumes results and events and hands them to the platform senders (the lifecycle is
    streams.StreamConsumer's).

    Every chat has its own queue, sent in order; a platform call takes one of `concurrency` slots only
    while it runs, so a chat that waits out a retry-after or a backoff holds up no other chat.

    Built from Settings by backend.processes.build_notifier; the defaults here are Settings' defaults.

    :param senders: platform name -> Sender
    :param concurrency: platform calls in flight at once (different chats proceed in parallel)
    :param results_stream: where the workers' results are read from
    :param events_stream: the progress events (read from the newest: older progress is stale)
    :param group: the notifiers' consumer group
    :param admin_ids: platform name -> its admins' ids, for operations alerts
    :param send_retries: send tries in one delivery round
    :param max_deliveries: failed delivery rounds after which a result is dead-lettered
    :param max_interrupted_deliveries: rounds cut short by a crash after which a result is dead-lettered
    :param delivered_ttl_s: how long `delivered:<task_id>` (and a result's round counters) are kept
    :param options: how it reads, keeps its entries and backs off; a send claim lapses with `lease_s`
    """

    def __init__(
        self,
        redis: Redis,
        senders: dict[str, Sender],
        *,
        concurrency: int = 8,
        results_stream: str = "photo_repair_results",
        events_stream: str = "photo_repair_events",
        group: str = "notifiers",
        admin_ids: Mapping[str, Sequence[int]] | None = None,
        send_retries: int = 5,
        max_deliveries: int = 3,
        max_interrupted_deliveries: int = 20,
        delivered_ttl_s: int = 7 * 24 * 3600,
        options: ConsumerOptions = DEFAULT_OPTIONS,
    ):
        super().__init__(
            redis,
            role="notifier",
            group=group,
            streams={results_stream: "0", events_stream: "$"},
            options=options,
        )
        self.platforms = {name: _Platform(name, sender) for name, sender in senders.items()}
        self.concurrency = concurrency
        self.max_held = concurrency * HELD_PER_SLOT  # entries read and not finished, over all chats
        self.results_stream = results_stream
        self.admin_ids = {name: list(ids) for name, ids in (admin_ids or {}).items()}
        self.send_retries = send_retries
        self.max_deliveries = max_deliveries
        self.max_interrupted_deliveries = max_interrupted_deliveries
        self.delivered_ttl_s = delivered_ttl_s
        # Keyed by (stream, entry id): the results and events streams can hand out the same id.
        self._inflight: dict[tuple[str, str], Entry] = {}
        self._chats: dict[str, _ChatQueue] = {}
        self._slots = asyncio.Semaphore(concurrency)
        self._warned_missing: set[str] = set()
        self._move_back = redis.register_script(MOVE_BACK_SCRIPT)
        # As long as a consumer lease: when a dead notifier's entries move on, its claim has lapsed too.
        self._claims = SendClaims(redis, ttl_ms=int(options.lease_s * 1000), rounds_ttl_s=delivered_ttl_s)

    async def alert_admins(self, message: str) -> int:
        """An operations alert (backend.alerts) to each platform's admins through its sender."""
        reached = 0
        for name, platform in self.platforms.items():
            admins = self.admin_ids.get(name)
            send = getattr(platform.sender, "send_admin_alert", None)
            if not admins or send is None:
                continue
            try:
                await platform.ensure_started()
                reached += await send(message, admins)
            except Exception as exc:  # noqa: BLE001 - one platform down must not silence the other
                log.warning("could not alert the %s admins: %s", name, exc)
        return reached

    # --- the lifecycle's parts (streams.StreamConsumer) --------------------------------------------
    async def open(self) -> None:
        for platform in self.platforms.values():
            with contextlib.suppress(SendRetry):  # tried again before its first send
                await platform.ensure_started()

    async def close(self) -> None:
        for platform in self.platforms.values():
            if platform.started:
                await platform.sender.close()

    def describe(self) -> str:
        return f"platforms: {', '.join(self.platforms) or 'none'}"

    def running(self) -> list[asyncio.Task[None]]:
        return [chat.task for chat in self._chats.values() if chat.task is not None]

    async def handle(self, entries: list[Entry]) -> None:
        for entry in entries:
            self._spawn(entry)

    async def maintain(self) -> None:
        """Pick up what a dead notifier left behind, take back waiting results, trim what all acknowledged."""
        free = self.max_held - len(self._inflight)
        if free > 0:
            for entry in await self.group.reclaim_stale(self.min_idle_ms, count=free):
                self._spawn(entry)
        await self._take_back_waiting()
        await self.group.trim_acknowledged(self.results_stream)
        await self.group.prune_idle_consumers(max(10 * self.min_idle_ms, 3600 * 1000))

    # What the group's heartbeat keeps ours (streams.Holder); a dead notifier's entries come via `adopt`.
    def in_hand(self) -> list[Entry]:
        return list(self._inflight.values())

    def room(self) -> int:
        return 0 if self._stopping.is_set() else max(0, self.max_held - len(self._inflight))

    def adopt(self, entry: Entry) -> None:
        self._spawn(entry)

    def taken_away(self, entries: list[Entry]) -> None:
        for entry in entries:  # the send claim keeps two notifiers from both posting it
            log.warning("%s %s was taken over by another notifier while in hand here", entry.stream, entry.entry_id)

    # --- per-chat queues ---------------------------------------------------------------------------
    def _spawn(self, entry: Entry) -> None:
        held = (entry.stream, entry.entry_id)
        if held in self._inflight:
            return
        self._inflight[held] = entry
        chat_key = chat_of(entry)
        chat = self._chats.get(chat_key)
        if chat is None:
            chat = self._chats[chat_key] = _ChatQueue()
        chat.entries.append(entry)
        if chat.task is None:
            chat.task = asyncio.create_task(self._serve_chat(chat_key, chat), name=f"chat-{chat_key}")

    async def _serve_chat(self, chat_key: str, chat: _ChatQueue) -> None:
        """Send one chat's entries in order until its queue is empty."""
        try:
            while chat.entries:
                entry = chat.entries[0]
                try:
                    await self._handle(entry)
                finally:
                    chat.entries.popleft()
                    self._inflight.pop((entry.stream, entry.entry_id), None)
                    self._slot_freed.set()
        finally:
            if self._chats.get(chat_key) is chat:
                del self._chats[chat_key]
            for entry in chat.entries:  # cancelled at shutdown: left pending for the next notifier
                self._inflight.pop((entry.stream, entry.entry_id), None)

    async def _handle(self, entry: Entry) -> None:
        about_task(None)  # one chat's entries share an asyncio task: none is about a task until decoded
        try:
            if entry.stream == self.results_stream:
                await self._handle_result(entry)
            else:
                await self._handle_event(entry)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - left pending; reclaimed and retried later
            log.error("could not handle %s %s: %s", entry.stream, entry.entry_id, exc)

    async def _handle_event(self, entry: Entry) -> None:
        """Progress is lossy by design: one try, then acknowledged whatever happened. It waits behind its
        chat's earlier entries, so a progress edit never lands after its result."""
        try:
            event = Event.decode(entry.fields)
            about_task(event.task_id)
            platform = self.platforms.get(event.reply.platform)
            if platform is not None and platform.started and not await self.redis.exists(keys.delivered(event.task_id)):
                async with self._slots:
                    await platform.sender.send_event(event)
        except MalformedRecord as exc:
            log.warning("dropping malformed event %s: %s", entry.entry_id, exc.reason)
        except REDIS_DOWN:
            raise
        except Exception as exc:  # noqa: BLE001 - a lost progress update is fine
            log.info("progress update for %s not shown: %s", entry.entry_id, exc)
        await self.group.ack(entry)

    # --- results -----------------------------------------------------------------------------------
    async def _handle_result(self, entry: Entry) -> None:
        try:
            result = Result.decode(entry.fields)
        except MalformedRecord as exc:
            await self.group.dead_letter(entry, reason=f"malformed result: {exc.reason}")
            return
        about_task(result.task_id)
        name = result.reply.platform
        if name in SILENT_PLATFORMS:
            await self.group.ack(entry)
            return
        platform = self.platforms.get(name)
        if platform is None:
            await self._park(entry, name)
            return
        claim = self._claims.for_task(result.task_id)
        if not await self._claim(claim, entry):
            return
        async with claim.held():
            # Counted per real delivery round, not per XPENDING delivery (a parked result was read too),
            # and a round a crash cut short is not counted as one that failed (backend.delivery).
            if claim.interrupted_rounds:
                log.info(
                    "result %s: %d earlier delivery round(s) cut short by a crash (limit %d)",
                    result.task_id,
                    claim.interrupted_rounds,
                    self.max_interrupted_deliveries,
                )
            if (
                claim.failed_rounds >= self.max_deliveries
                or claim.interrupted_rounds >= self.max_interrupted_deliveries
            ):
                await self._give_up(entry, result, platform, claim)
                return
            await self._deliver(entry, result, platform, claim)

    async def _give_up(self, entry: Entry, result: Result, platform: _Platform, claim: SendClaim) -> None:
        """Dead-letter a result out of delivery rounds. Its user is told first, in a short note, unless
        part of the result is in the chat already or a note tried before was itself cut short by a crash
        (the note must not be what keeps killing the notifier)."""
        if claim.failed_rounds >= self.max_deliveries:
            reason = f"delivery failed too many times ({claim.failed_rounds} rounds of {self.send_retries} tries)"
        else:
            reason = f"the notifier died mid-send {claim.interrupted_rounds} times (crashed or killed while sending it)"
        if claim.interrupted_rounds <= self.max_interrupted_deliveries:
            await self._tell_undeliverable(result, platform)
        await self.group.dead_letter(entry, reason=reason, last_error=reason)
        metrics.send_ended(platform.name, "dead_lettered")

    async def _tell_undeliverable(self, result: Result, platform: _Platform) -> None:
        """One try at a failure note in place of the result; `dlq retry` later sends the result afresh."""
        parts = await self.redis.hgetall(keys.send_parts(result.task_id))
        if any(value in (SENT, SENT.encode()) for value in parts.values()):
            log.info("result %s partly reached its chat: no failure note", result.task_id)
            return
        note = Result(
            result.task_id,
            "failed",
            result.reply,
            mode=result.mode,
            input=result.input,
            error="undeliverable",
            message=text("undeliverable", user_lang(result.reply)),
            user=result.user,
            worker=result.worker,
        )
        try:
            await platform.ensure_started()
            async with self._slots:
                await platform.sender.send_result(note)
        except Exception as exc:  # noqa: BLE001 - it is dead-lettered either way; the admins see it there
            log.warning(
                "could not tell the user that result %s can't be delivered: %s",
                result.task_id,
                scrub(f"{type(exc).__name__}: {exc}"),
            )
        await self.redis.delete(keys.send_parts(result.task_id))

    async def _claim(self, claim: SendClaim, entry: Entry) -> bool:
        """Take the task's send claim, waiting while another notifier process holds it. `delivered:` is
        checked in the same step, so a second entry for this task, or a second notifier, finds it there
        and only acknowledges. False when there is nothing to send (or this notifier is stopping)."""
        waited = False
        while True:
            state = await claim.try_acquire()
            if state == ACQUIRED:
                return True
            if state == DELIVERED:
                await self.group.ack(entry)
                return False
            if self._stopping.is_set():
                return False
            if not waited:
                log.info("result of %s is being sent by another notifier; waiting for it", claim.task_id)
                waited = True
            await self._sleep(CLAIM_POLL_S)

    async def _deliver(self, entry: Entry, result: Result, platform: _Platform, claim: SendClaim) -> None:
        """Send with retries. A retry-after is waited out in full, and every wait happens outside the
        platform-call slots: only this chat waits."""
        last_error = ""
        backoff = Backoff(self.retry_backoff_s, self.retry_backoff_max_s)
        for attempt in range(1, self.send_retries + 1):
            if claim.lost or self._stopping.is_set():
                log.warning(
                    "result %s left pending: %s",
                    result.task_id,
                    "its send claim lapsed" if claim.lost else "notifier stopping",
                )
                return
            try:
                await platform.ensure_started()
                async with self._slots:
                    await platform.sender.send_result(result)
            except SendPermanent as exc:
                reason = scrub(str(exc))
                log.warning("result %s can't be delivered: %s", result.task_id, reason)
                await self.group.dead_letter(entry, reason=f"undeliverable: {reason}", last_error=reason)
                metrics.send_ended(platform.name, "dead_lettered")
                return
            except SendRetry as exc:
                last_error = scrub(str(exc))
                # a retry-after is waited out in full (a little more, so chats asked to wait don't all return at once)
                wait = backoff.next_delay() if exc.after_s is None else jittered(exc.after_s, 0.1)
                metrics.send_retried(platform.name, rate_limited=exc.after_s is not None)
            except Exception as exc:  # noqa: BLE001 - unknown send errors are retried, then left pending
                last_error = scrub(f"{type(exc).__name__}: {exc}")
                wait = backoff.next_delay()
                metrics.send_retried(platform.name, rate_limited=False)
            else:
                await claim.delivered(entry.stream, self.group.group, entry.entry_id, ttl_s=self.delivered_ttl_s)
                metrics.send_delivered(platform.name, result.finished_at)
                log.info("delivered %s result of %s to %s", result.status, result.task_id, platform.name)
                return
            log.info(
                "send of %s failed (attempt %d): %s; next try in %.1f s", result.task_id, attempt, last_error, wait
            )
            await self._sleep(wait)
        await claim.round_failed()
        log.warning(
            "result %s left pending after %d tries (a failed delivery round): %s", result.task_id, attempt, last_error
        )
        metrics.send_ended(platform.name, "left_pending")

    # --- results no notifier here can send ---------------------------------------------------------
    async def _park(self, entry: Entry, platform: str) -> None:
        """Move a result for a platform this notifier has no sender for into that platform's waiting
        stream (and acknowledge it, so it neither comes back every min_idle nor holds down the results
        stream's trim). A notifier that has the sender takes it back at start and every maintenance."""
        waiting = keys.waiting_results(self.results_stream, platform)
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.xadd(waiting, entry.fields)
            pipe.xack(entry.stream, self.group.group, entry.entry_id)
            pipe.xlen(waiting)
            count = (await pipe.execute())[2]
        if platform not in self._warned_missing:
            self._warned_missing.add(platform)
            log.warning(
                "no %s sender in this notifier (token unset?): %s results wait in %s (%d now) until a "
                "notifier with one starts",
                platform,
                platform,
                waiting,
                count,
            )

    async def _take_back_waiting(self) -> None:
        """Results that waited for a sender this notifier has go back into the results stream."""
        for name in self.platforms:
            waiting = keys.waiting_results(self.results_stream, name)
            moved = await self._move_back(keys=[waiting, self.results_stream], args=[MOVE_BACK_BATCH])
            if moved:
                log.info("took back %d %s result(s) that waited for a sender", moved, name)


def chat_of(entry: Entry) -> str:
    """The chat an entry goes to: its queue. Unreadable entries get a queue of their own."""
    try:
        reply = decode_reply(entry.fields.get(b"reply", entry.fields.get("reply")))
    except MalformedRecord:
        return f"entry:{entry.stream}:{entry.entry_id}"
    if isinstance(reply, TelegramReply):
        return f"telegram:{reply.chat_id}"
    if isinstance(reply, DiscordReply):
        return f"discord:{reply.channel_id or reply.user_id}"
    task_id = entry.fields.get(b"task_id", entry.fields.get("task_id", entry.entry_id))
    return f"{reply.platform}:task:{task_id!r}"
