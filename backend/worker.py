"""Runs colorization tasks: the consumer group `repair_workers`.

The work itself is the executor's (backend.executors: ComfyUI by default, `EXECUTOR=noop` for
benchmarks). The loop reads only as many tasks as the executor has free slots for; when every
ComfyUI instance is down it reads nothing (the circuit breaker), so tasks wait in the stream and none
fails for it.

Per task: stored result → re-published; cancelled → `cancelled` result; otherwise the executor runs
it, the result is written, and only then XACK. Permanent errors fail the task at once, and a task delivered more than
`max_deliveries` times (graceful hand-backs at shutdown not counted) is dead-lettered, after a failed
result has told its user.

A suspect, a task delivered before and never finished (it was in hand when a worker died), runs
alone: while one is in hand the worker reads and takes over nothing more, the suspect starts once
the tasks beside it are done, and suspects run one at a time. If it is what kills workers, it kills
no other task with it (their deliveries would count towards the DLQ too), and it alone reaches
`max_deliveries`. Our own entries from before a restart are read one at a time for the same reason:
each read counts a delivery.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from redis.asyncio import Redis

from backend import keys, metrics
from backend.backoff import Backoff, wait_event
from backend.errors import HandedBack, Refused, RepairError
from backend.executors import Executor
from backend.logs import about_task
from backend.publishing import ResultPublisher
from backend.redis_conn import REDIS_DOWN
from backend.replies import user_lang
from backend.streams import DEFAULT_OPTIONS, ConsumerOptions, Entry, StreamConsumer
from backend.tasks import MalformedRecord, Result, Task, decode_reply, now_ms
from backend.texts import text
from backend.workflows import Workflows

log = logging.getLogger(__name__)

DONE_LOG_KEEP_MS = 24 * 3600 * 1000
FORGET_CONSUMER_MS = 3600 * 1000  # a consumer name silent this long, holding nothing, is forgotten

# KEYS: per task its result hash, its task hash, its cancel flag. Per task: the stored result (flat
# pairs, empty when none), the graceful hand-backs so far, whether it was cancelled. Read only.
PRECHECKS_SCRIPT = """
local out = {}
for i = 1, #KEYS, 3 do
  out[#out + 1] = redis.call('HGETALL', KEYS[i])
  out[#out + 1] = redis.call('HGET', KEYS[i + 1], 'handed_back')
  out[#out + 1] = redis.call('EXISTS', KEYS[i + 2])
end
return out
"""


class Worker(StreamConsumer):
    """Consumes tasks and runs them through its executor (the lifecycle is streams.StreamConsumer's).

    Built from Settings by backend.processes.build_worker; the defaults here are Settings' defaults.

    :param executor: makes what runs the tasks, given the callback it calls whenever its capacity grows
    :param executor_name: what the start-up log line calls it (Settings.executor)
    :param workflows: the modes
    :param tasks_stream: the stream tasks are read from
    :param results_stream: where results are written
    :param group: the workers' consumer group
    :param max_deliveries: deliveries (graceful hand-backs aside) after which a task is dead-lettered
    :param result_ttl_s: how long a stored result and the task's hash are kept (Settings.blob_ttl_s)
    :param options: how it reads, keeps its entries and backs off
    """

    def __init__(
        self,
        redis: Redis,
        *,
        executor: Callable[[Callable[[], None]], Executor],
        workflows: Workflows,
        executor_name: str = "comfyui",
        tasks_stream: str = "photo_repair_tasks",
        results_stream: str = "photo_repair_results",
        group: str = "repair_workers",
        max_deliveries: int = 3,
        result_ttl_s: int = 24 * 3600,
        options: ConsumerOptions = DEFAULT_OPTIONS,
    ):
        super().__init__(redis, role="worker", group=group, streams={tasks_stream: "0"}, options=options)
        self.workflows = workflows
        self.executor = executor(self._slot_freed.set)
        self.executor_name = executor_name
        self.tasks_stream = tasks_stream
        self.results_stream = results_stream
        self.max_deliveries = max_deliveries
        self._read_prechecks = redis.register_script(PRECHECKS_SCRIPT)
        self.publisher = ResultPublisher(redis, group=group, results_stream=results_stream, ttl_s=result_ttl_s)
        self._inflight: dict[str, tuple[Entry, asyncio.Task[None]]] = {}
        self._taken_away: set[str] = set()
        self._suspects: set[str] = set()  # entries in hand that were in flight when a worker died
        self._one_suspect = asyncio.Lock()
        self._task_done = asyncio.Event()
        self._paused = False

    @property
    def name(self) -> str:
        return self.group.consumer

    def stop(self) -> None:
        """Stop reading; running tasks get `shutdown_grace_s` to finish, waiting ones are handed back now."""
        super().stop()
        self.executor.stop()

    # --- the lifecycle's parts (streams.StreamConsumer) --------------------------------------------
    async def open(self) -> None:
        await self.executor.start()

    async def close(self) -> None:
        await self.executor.close()

    def describe(self) -> str:
        return f"executor {self.executor_name}, {self.executor.capacity()} slot(s)"

    def running(self) -> list[asyncio.Task[None]]:
        return [task for _, task in self._inflight.values()]

    async def free_slots(self) -> int:
        """Free slots, none while the queue is paused (asked on every pass, so a pause holds at once)."""
        self._paused = bool(await self.redis.exists(keys.PAUSED))
        return 0 if self._paused else self._capacity()

    async def handle(self, entries: list[Entry]) -> None:
        await self._spawn_all(entries)

    # --- what the group's heartbeat keeps (streams.Holder) --------------------------------------------
    def in_hand(self) -> list[Entry]:
        return [entry for entry, _ in self._inflight.values()]

    def room(self) -> int:
        if self._stopping.is_set() or self._paused:
            return 0
        return max(0, min(1, self._capacity()))  # taken over from the dead: suspects, one at a time

    def adopt(self, entry: Entry) -> None:
        log.info("took over task entry %s from a dead worker (delivery %d)", entry.entry_id, entry.deliveries)
        self._spawn(entry)

    def taken_away(self, entries: list[Entry]) -> None:
        """Another worker owns these now (we stalled past our lease): stop, it runs them."""
        for entry in entries:
            held = self._inflight.get(entry.entry_id)
            if held is not None:
                log.warning(
                    "task entry %s was taken over by another worker while running here: stopping it", entry.entry_id
                )
                self._taken_away.add(entry.entry_id)
                held[1].cancel()

    # --- reading and maintenance -----------------------------------------------------------------------
    def _capacity(self) -> int:
        """The executor's slots minus tasks already in hand (running or waiting for a slot); none beside a suspect."""
        if self._suspects:
            return 0
        return self.executor.capacity() - len(self._inflight)

    async def take_back_own_pending(self) -> None:
        """Our entries from before a restart, one per read: a read counts a delivery for each entry it
        returns, and one that turns out a suspect must not leave others counted beside it."""
        after = "0"
        while not self._stopping.is_set():
            self._slot_freed.clear()
            if self._capacity() <= 0:
                await wait_event(self._slot_freed, 1.0)
                continue
            entries = await self._until_redis_answers(functools.partial(self.group.read_own_pending, 1, after=after))
            if not entries:
                return
            after = entries[-1].entry_id
            await self._spawn_all(entries)

    async def maintain(self) -> None:
        """Take over stale entries (unless paused), trim what is acknowledged.

        Our own entries are kept ours by the group's heartbeat, and a dead worker's are taken over
        by it as soon as its lease lapses; XAUTOCLAIM after `min_idle` here is for a worker that is
        alive but hung.
        """
        if not self._stopping.is_set() and self._capacity() > 0 and not await self.redis.exists(keys.PAUSED):
            # One at a time: each is a suspect, run alone (and XAUTOCLAIM counts a delivery for all it returns).
            reclaimed = [
                entry
                for entry in await self.group.reclaim_stale(self.min_idle_ms, count=1)
                if entry.entry_id not in self._inflight
            ]
            for entry in reclaimed:
                log.info("reclaimed stale task entry %s (delivery %d)", entry.entry_id, entry.deliveries)
            await self._spawn_all(reclaimed)
        await self.group.trim_acknowledged(self.tasks_stream)
        await self.group.prune_idle_consumers(max(10 * self.min_idle_ms, FORGET_CONSUMER_MS))
        await self.redis.zremrangebyscore(keys.DONE_LOG, "-inf", now_ms() - DONE_LOG_KEEP_MS)

    async def _spawn_all(self, entries: list[Entry]) -> None:
        """Start handling entries, their pre-checks read for all of them in one round trip."""
        entries = [entry for entry in entries if entry.entry_id not in self._inflight]
        if not entries:
            return
        try:
            checks = await self._prechecks(entries)
        except REDIS_DOWN as exc:  # each task then asks for itself (and stays pending if Redis stays away)
            log.warning("batched pre-checks failed (%s): checking task by task", exc)
            checks = {}
        for entry in entries:
            self._spawn(entry, checks.get(entry.entry_id))

    async def _prechecks(self, entries: list[Entry]) -> dict[str, _Prechecks]:
        """Stored result, hand-backs and cancel flag of every decodable task, in one script call."""
        tasks: list[tuple[str, Task]] = []
        for entry in entries:
            with contextlib.suppress(MalformedRecord):
                tasks.append((entry.entry_id, Task.decode(entry.fields)))
        if not tasks:
            return {}
        script_keys: list[str] = []
        for _, task in tasks:
            script_keys += [keys.result(task.task_id), keys.task(task.task_id), keys.cancelled(task.task_id)]
        replies = await self._read_prechecks(keys=script_keys)
        return {
            entry_id: _Prechecks(task, _pairs(replies[3 * i]), int(replies[3 * i + 1] or 0), bool(replies[3 * i + 2]))
            for i, (entry_id, task) in enumerate(tasks)
        }

    def _spawn(self, entry: Entry, checks: _Prechecks | None = None) -> None:
        if entry.entry_id in self._inflight:
            return
        if entry.deliveries - (checks.handed_back if checks else 0) > 1:
            self._suspects.add(entry.entry_id)  # from now on nothing more is read (see _capacity)
        task = asyncio.create_task(self._handle(entry, checks), name=f"task-{entry.entry_id}")
        self._inflight[entry.entry_id] = (entry, task)

        def done(_: asyncio.Task[None]) -> None:
            self._inflight.pop(entry.entry_id, None)
            self._taken_away.discard(entry.entry_id)
            self._suspects.discard(entry.entry_id)
            self._slot_freed.set()
            self._task_done.set()

        task.add_done_callback(done)

    # --- one task ------------------------------------------------------------------------------------
    async def _handle(self, entry: Entry, checks: _Prechecks | None = None) -> None:
        try:
            task = checks.task if checks else Task.decode(entry.fields)
        except MalformedRecord as exc:
            await self._reject_malformed(entry, exc)
            return
        about_task(task.task_id)
        result: Result | None = None
        backoff = Backoff(self.retry_backoff_s, self.retry_backoff_max_s)
        while True:
            try:
                if result is None:
                    result = await self._outcome(entry, task, checks)
                    if result is None:  # re-published or dead-lettered: nothing more to write
                        return
                await self._finish(entry, task, result)
                return
            except HandedBack:
                await self._note_hand_back(task)
                return
            except asyncio.CancelledError:
                if entry.entry_id not in self._taken_away:
                    await self._note_hand_back(task)
                raise
            except REDIS_DOWN as exc:
                # Keep what we hold (the task, or its result) until Redis is back, then write it: after a
                # restart that lost everything, this copy is the only one left.
                held = "its result" if result is not None else "the task"
                delay = backoff.next_delay()
                log.warning(
                    "task %s: Redis unreachable (%s); keeping %s, retrying in %.1f s", task.task_id, exc, held, delay
                )
                await asyncio.sleep(delay)
                checks = None
            except Exception as exc:  # noqa: BLE001 - leave it pending: redelivery counts towards the DLQ
                log.exception("task %s failed unexpectedly, left for redelivery: %s", task.task_id, exc)
                return

    async def _outcome(self, entry: Entry, task: Task, checks: _Prechecks | None) -> Result | None:
        """The task's result to write, or None when it is already dealt with (re-published, given up)."""
        if checks is None:
            checks = _Prechecks(
                task,
                await self.redis.hgetall(keys.result(task.task_id)),
                await self._handed_back(task),
                bool(await self.redis.exists(keys.cancelled(task.task_id))),
            )
        if await self._republish_stored(entry, task, checks.stored):
            return None
        deliveries = entry.deliveries - checks.handed_back
        if deliveries > self.max_deliveries:
            await self._give_up(entry, task, f"delivered {deliveries} times without finishing")
            return None
        if checks.cancelled:
            return self._result(task, "cancelled", "cancelled")
        if deliveries > 1:
            return await self._run_alone(entry, task, deliveries)
        if entry.entry_id in self._suspects:  # its deliveries were graceful hand-backs: not a suspect after all
            self._suspects.discard(entry.entry_id)
            self._slot_freed.set()
        return await self._run(task)

    async def _run_alone(self, entry: Entry, task: Task, deliveries: int) -> Result:
        """Run a suspect with no other task beside it: once those in hand are done, one suspect at a time."""
        async with self._one_suspect:
            while any(entry_id not in self._suspects for entry_id in self._inflight):
                self._task_done.clear()
                await wait_event(self._task_done, 1.0)
            log.warning(
                "running task %s alone: it was in flight when a worker died (delivery %d of at most %d)",
                task.task_id,
                deliveries,
                self.max_deliveries,
            )
            return await self._run(task)

    async def _handed_back(self, task: Task) -> int:
        """Deliveries that ended in a graceful hand-back at shutdown: they are not the task's fault."""
        return int(await self.redis.hget(keys.task(task.task_id), "handed_back") or 0)

    async def _note_hand_back(self, task: Task) -> None:
        log.info("task %s handed back at shutdown", task.task_id)
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.redis.hincrby(keys.task(task.task_id), "handed_back", 1), timeout=2)

    async def _reject_malformed(self, entry: Entry, exc: MalformedRecord) -> None:
        """Dead-letter on first sight; answer the user first when the reply channel is readable."""
        try:
            reply = decode_reply(entry.fields.get(b"reply") or entry.fields.get("reply"))
            task_id = _as_text(entry.fields.get(b"task_id") or entry.fields.get("task_id") or "")
        except (MalformedRecord, ValueError, TypeError):
            reply, task_id = None, ""
        if reply is not None and task_id.isalnum() and 8 <= len(task_id) <= 64:
            failed = Result(
                task_id,
                "failed",
                reply,
                error="malformed_task",
                message=text("malformed_task", user_lang(reply)),
                worker=self.name,
            )
            await self.redis.xadd(self.results_stream, failed.encode())
        await self.group.dead_letter(entry, reason=f"malformed task: {exc.reason}")
        metrics.task_dead_lettered("")

    async def _give_up(self, entry: Entry, task: Task, reason: str) -> None:
        """The user is told (result written) before the entry leaves the stream for the DLQ."""
        await self._publish(task, self._result(task, "failed", "too_many_attempts"))
        await self.group.dead_letter(entry, reason=reason, last_error=reason)
        metrics.task_dead_lettered(task.mode)

    async def _republish_stored(self, entry: Entry, task: Task, stored: dict[Any, Any]) -> bool:
        if not stored:
            return False
        log.info("task %s already has a result: re-publishing it", task.task_id)
        await self.redis.xadd(self.results_stream, stored)
        await self.group.ack(entry)
        return True

    def _result(
        self,
        task: Task,
        status: str,
        code: str = "",
        *,
        values: dict[str, Any] | None = None,
        output: str = "",
        run_ms: int = 0,
    ) -> Result:
        """A result; a failure's message is the catalog sentence in the user's language, values filled."""
        queued_ms = max(0, now_ms() - task.submitted_at - run_ms)
        return Result(
            task_id=task.task_id,
            status=status,  # type: ignore[arg-type]
            reply=task.reply,
            mode=task.mode,
            input=task.input,
            output=output,
            error=code if status != "ok" else "",
            message=text(code, user_lang(task.reply), **(values or {})) if status != "ok" else "",
            user=task.user,
            queued_ms=queued_ms,
            run_ms=run_ms,
            worker=self.name,
        )

    async def _run(self, task: Task) -> Result:
        """Everything between reading a task and having its result; never raises RepairError."""
        metrics.task_started(task.mode)
        try:
            mode = self.workflows.get(task.mode)
            mode.check_params(task.params)
            done = await self.executor.execute(task, mode)
            return self._result(task, "ok", output=done.output, run_ms=done.run_ms)
        except Refused as exc:
            return self._result(task, "failed", exc.code, values=exc.values)
        except RepairError as exc:
            status = "cancelled" if exc.code == "cancelled" else "failed"
            log.info("task %s %s: %s %s", task.task_id, status, exc.code, exc.detail)
            return self._result(task, status, exc.code, values=exc.values)

    # --- writing results --------------------------------------------------------------------------
    async def _publish(self, task: Task, result: Result) -> None:
        """Write the result (stream entry + stored copy) and the bookkeeping, in one transaction."""
        await self.publisher.publish(result, user=task.user)
        metrics.task_finished(task.mode, result.status, result.error, run_ms=result.run_ms, queued_ms=result.queued_ms)

    async def _finish(self, entry: Entry, task: Task, result: Result) -> None:
        """The result, its bookkeeping and the XACK of the task entry, in one transaction."""
        await self.publisher.publish(result, user=task.user, stream=entry.stream, entry_id=entry.entry_id)
        metrics.task_finished(task.mode, result.status, result.error, run_ms=result.run_ms, queued_ms=result.queued_ms)
        log.info(
            "task %s %s: mode %s, %s, ran %.1f s after %.1f s in line",
            task.task_id,
            result.status,
            task.mode,
            result.error or "no error",
            result.run_ms / 1000,
            result.queued_ms / 1000,
        )


@dataclass(frozen=True)
class _Prechecks:
    """What a task's handling looks at before running it, read for a whole batch at once."""

    task: Task
    stored: dict[Any, Any]  # its stored result, when a previous delivery got that far
    handed_back: int
    cancelled: bool


def _pairs(flat: list[Any]) -> dict[Any, Any]:
    """HGETALL's reply inside a script is flat: name, value, name, value..."""
    return dict(zip(flat[::2], flat[1::2]))


def _as_text(value: Any) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)
