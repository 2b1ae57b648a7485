"""Keeps waiting photos' status messages current: the place in line and the wait while queued, the
elapsed time while colorizing.

The bots `watch` each task they queue. Every few seconds one announcer (a Redis lease, whichever
bot process holds it) reads where each watched task stands and puts a "queued" event (position and
ETA, only when they changed) or a refresh of a running one on the events stream; the notifier's
senders turn those into edits through the status line's forward-only gate and their platform's
throttle. Finished tasks are dropped from the watch list.
"""

from __future__ import annotations

import asyncio
import logging
import math
from dataclasses import dataclass
from typing import Any

from redis.asyncio import Redis

from backend import keys
from backend.admin import group_info
from backend.backoff import wait_event
from backend.replies import Reply, reply_json
from backend.status_line import QUEUED, RUNNING, StatusLines, known_run_s, line_id, queued_text
from backend.stream_names import DEFAULT_STREAMS, StreamNames
from backend.task_handle import TaskState, state_of
from backend.tasks import Event, MalformedRecord, decode_reply

log = logging.getLogger(__name__)

WATCHED = "repairbot:status:watched"  # hash: task id -> the task's reply channel (JSON)
ANNOUNCED = "repairbot:status:announced"  # hash: task id -> "position:eta" last put on the stream
LEASE = "repairbot:status:announcer"
ANNOUNCE_EVERY_S = 3.0
MAX_WATCHED = 2000


@dataclass(frozen=True)
class Place:
    """Where one of a user's photos stands, for /where and the queued status."""

    task_id: str
    state: str  # queued | running
    position: int
    eta_s: int  # 0 when run times are not known yet


class QueueView:
    """Places in line for many tasks at once, from one XINFO GROUPS.

    :param streams: the stream and group names (the workers' group on the task stream is read)
    :param parallel: how many photos run at once (ComfyUI instances times WORKER_CONCURRENCY)
    """

    def __init__(self, redis: Redis, *, streams: StreamNames = DEFAULT_STREAMS, parallel: int = 1):
        self.redis = redis
        self.streams = streams
        self.parallel = max(1, parallel)

    async def places(self, task_ids: list[str]) -> list[Place]:
        """Queued and running tasks among `task_ids`, in line order; finished ones are left out.

        A task the workers have not read yet is behind everything they hold (the group's pending
        count) plus the unread entries before it. A task a worker holds but has not started is
        behind the watched tasks before it that are not finished (chat photos are all watched)."""
        if not task_ids:
            return []
        info = await group_info(self.redis, self.streams.tasks_stream, self.streams.workers_group)
        pending = int(info.get("pending") or 0) if info else 0
        entries_read = int(info.get("entries-read") or 0) if info else 0
        run_s = await known_run_s(self.redis)
        parallel = self.parallel
        everyone = list(dict.fromkeys([*task_ids, *(_str(k) for k in await self.redis.hkeys(WATCHED))]))
        async with self.redis.pipeline(transaction=False) as pipe:
            for task_id in everyone:
                pipe.hmget(keys.task(task_id), "state", "ordinal")
            rows = dict(zip(everyone, await pipe.execute()))
        active = sorted(
            int(ordinal or 0)
            for state, ordinal in rows.values()
            if state_of(state) in (TaskState.QUEUED, TaskState.IN_COMFYUI)
        )
        places = []
        for task_id in task_ids:
            state, ordinal = rows[task_id]
            state, ordinal = state_of(state), int(ordinal or 0)
            if state is TaskState.QUEUED:
                if ordinal > entries_read:
                    position = pending + ordinal - entries_read
                else:
                    position = 1 + sum(1 for other in active if other < ordinal)
                position = max(position, 1)
                eta = max(1, round(math.ceil(position / parallel) * run_s)) if run_s else 0
                places.append(Place(task_id, "queued", position, eta))
            elif state is TaskState.IN_COMFYUI:  # handed to ComfyUI: running, or waiting in its queue behind others
                position = 1 + sum(1 for other in active if other < ordinal)
                eta = max(1, round(math.ceil(position / parallel) * run_s)) if run_s else 0
                started = await self._started(task_id)
                places.append(Place(task_id, "running" if started else "queued", position, eta))
        return sorted(places, key=lambda p: (p.state != "running", p.position))

    async def _started(self, task_id: str) -> bool:
        """Whether the task's status says it is colorizing (ComfyUI may still hold it behind others)."""
        raw = await self.redis.hget(WATCHED, task_id)
        line = line_id(_watched_reply(raw)) if raw else None
        current = await StatusLines(self.redis).current(line) if line else None
        return current is None or current.stage >= RUNNING

    async def of_user(self, user: str) -> list[Place]:
        members = await self.redis.smembers(keys.user_active(user))
        return await self.places([_str(m) for m in members])


class PositionAnnouncer:
    """Puts position and elapsed-time refreshes of watched tasks on the events stream.

    :param view: where the watched photos stand
    :param every_s: how often the places are refreshed (STATUS_REFRESH_S)
    :param backlog: backend.backlog.Backlog, whose waiting photos are started from here
    :param events_stream: where the refreshes go
    :param events_maxlen: the events stream is trimmed to about this many entries
    :param blob_ttl_s: how long the watched and announced bookkeeping is kept
    """

    def __init__(
        self,
        redis: Redis,
        view: QueueView,
        *,
        every_s: float = ANNOUNCE_EVERY_S,
        backlog: Any = None,
        events_stream: str = "photo_repair_events",
        events_maxlen: int = 5000,
        blob_ttl_s: int = 24 * 3600,
    ):
        self.backlog = backlog
        self.redis = redis
        self.every_s = every_s
        self.events_stream = events_stream
        self.events_maxlen = events_maxlen
        self.blob_ttl_s = blob_ttl_s
        self.view = view
        self.lines = StatusLines(redis)

    async def watch(self, task_id: str, reply: Reply) -> None:
        """Follow this task's status message until the task is finished."""
        if line_id(reply) is None:
            return
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.hset(WATCHED, task_id, reply_json(reply))
            pipe.expire(WATCHED, self.blob_ttl_s)
            await pipe.execute()

    async def announce_queued(
        self, queued: list[Any], replies: list[Reply], lang: str, *, waiting: int = 0, note: str = ""
    ) -> str | None:
        """Follow newly queued photos under one status message, and say where they stand: the sentence
        that status shows now ("Queued — #N, about M s", how many more wait in the backlog, a note), or
        None when there is nothing to edit: finished already, or the worker or the result got there
        first (the status only moves forward). From here on the refresher keeps the place current.

        :param queued: intake's Submitted for each photo, with `replies` its reply channel
        """
        from backend.texts import text

        line = line_id(replies[0]) if replies else None
        for submitted, reply in zip(queued, replies):
            await self.watch(submitted.task_id, reply)
            if line is not None:
                await self.lines.add_task(line, submitted.task_id)
        places = await self.view.places([s.task_id for s in queued])
        if not places or line is None:
            return None
        sentence = queued_text(lang, places[0].position, max(p.eta_s for p in places) or None, count=len(queued))
        if waiting:
            sentence += "\n" + text("backlog_waiting", lang, count=waiting)
        if note:
            sentence += "\n" + note
        return sentence if await self.lines.advance(line, QUEUED, sentence) else None

    async def tick(self) -> int:
        """One round (if this process holds the lease); returns how many events it put on the stream."""
        lease_ms = max(1, int(self.every_s * 1000) - 50)
        if not await self.redis.set(LEASE, "1", nx=True, px=lease_ms):
            return 0
        backlogged: dict[str, int] = {}
        if self.backlog is not None:
            await self.backlog.pump()
            backlogged = await self.backlog.waiting_by_line()
        watched = await self.redis.hgetall(WATCHED)
        if len(watched) > MAX_WATCHED:  # never expected (the queue cap is lower): refresh the oldest part
            watched = dict(list(watched.items())[:MAX_WATCHED])
        replies = {_str(k): reply for k, v in watched.items() if (reply := _watched_reply(v)) is not None}
        places = {p.task_id: p for p in await self.view.places(list(replies))}
        announced = {_str(k): _str(v) for k, v in (await self.redis.hgetall(ANNOUNCED)).items()}
        gone = [task_id for task_id in replies if task_id not in places]
        events: list[Event] = []
        by_line: dict[str, list[Place]] = {}
        for place in places.values():  # in line order
            by_line.setdefault(line_id(replies[place.task_id]) or "", []).append(place)
        for line_key, line_places in by_line.items():
            line = await self.lines.current(line_key)
            started = line is not None and line.stage >= RUNNING
            first = line_places[0]
            reply = replies[first.task_id]
            # Handed to ComfyUI but not started (behind prefetched prompts) is still waiting for the user.
            waiting = [p for p in line_places if p.state == "queued" or not started]
            if not started:  # the line's first photo is the one whose place matters
                eta = max(p.eta_s for p in waiting) if all(p.eta_s for p in waiting) else 0
                held = backlogged.get(line_key, 0)
                mark = f"{first.position}:{eta}:{len(waiting)}:{held}"
                if announced.get(first.task_id) != mark:
                    announced[first.task_id] = mark
                    events.append(
                        Event(
                            first.task_id,
                            "queued",
                            reply,
                            position=first.position,
                            eta_s=eta,
                            count=len(waiting),
                            backlogged=held,
                        )
                    )
            else:
                if line is not None and line.stage == RUNNING:  # started: the elapsed time goes on
                    events.append(Event(first.task_id, "progress", reply))
        async with self.redis.pipeline(transaction=False) as pipe:
            for event in events:
                pipe.xadd(self.events_stream, event.encode(), maxlen=self.events_maxlen, approximate=True)
            if gone:
                pipe.hdel(WATCHED, *gone)
                pipe.hdel(ANNOUNCED, *gone)
            for event in events:
                if event.state == "queued":
                    pipe.hset(ANNOUNCED, event.task_id, announced[event.task_id])
            pipe.expire(ANNOUNCED, self.blob_ttl_s)
            await pipe.execute()
        return len(events)

    async def run(self, stop: asyncio.Event) -> None:
        """Tick until `stop` is set; a Redis hiccup skips a round, never ends the loop."""
        while not stop.is_set():
            try:
                await self.tick()
            except Exception as exc:  # noqa: BLE001 - a missed refresh is fine, a dead loop is not
                log.info("position refresh skipped: %s", exc)
            await wait_event(stop, self.every_s)


def _str(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value or "")


def _watched_reply(raw: Any) -> Reply | None:
    """A watched task's reply channel; an unreadable one has no status to refresh."""
    try:
        return decode_reply(raw)
    except MalformedRecord:
        return None


def where_lines(places: list[Place], lang: str) -> str:
    """/where: each waiting photo's place and wait, one line each, in the user's language."""
    from backend.texts import text

    if not places:
        return text("where_none", lang)
    lines = []
    for index, place in enumerate(places, start=1):
        if place.state == "running":
            lines.append(text("where_running", lang, index=index))
        elif place.eta_s:
            lines.append(text("where_queued", lang, index=index, position=place.position, eta=place.eta_s))
        else:
            lines.append(text("where_queued_no_eta", lang, index=index, position=place.position))
    return "\n".join(lines)
