"""A task that was in flight when a worker died runs alone, so a poison kills no other task with it.

Real redis-server, a real Worker; the executor only records what ran beside what and what the
pending list said at that moment.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator
from typing import Any

from backend import keys
from backend.executors import Execution
from backend.processes import build_worker
from backend.replies import LoopbackReply
from backend.tasks import Task

REPLY = LoopbackReply()


class WatchingExecutor:
    """Four slots; each run notes the tasks running beside it and the group's pending list as it starts."""

    def __init__(self, redis: Any, settings: Any):
        self.redis, self.settings = redis, settings
        self.running: set[str] = set()
        self.beside: dict[str, set[str]] = {}
        self.pending_at_start: dict[str, dict[str, tuple[str, int]]] = {}

    def capacity(self) -> int:
        return 4

    async def start(self) -> None:
        pass

    def stop(self) -> None:
        pass

    async def close(self) -> None:
        pass

    async def execute(self, task: Task, mode: Any) -> Execution:
        self.running.add(task.task_id)
        self.beside[task.task_id] = set()
        for other in self.running:
            self.beside[other] |= self.running - {other}
        pending = await self.redis.xpending_range(
            self.settings.tasks_stream, self.settings.workers_group, min="-", max="+", count=100
        )
        self.pending_at_start[task.task_id] = {
            _text(p["message_id"]): (_text(p["consumer"]), p["times_delivered"]) for p in pending
        }
        await asyncio.sleep(0.3)
        self.running.discard(task.task_id)
        return Execution(task.input, 300)


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


async def add_tasks(redis, settings, names: str) -> dict[str, str]:
    """One task per letter (task id 32 times the letter); entry id -> task id."""
    added = {}
    for letter in names:
        task = Task(task_id=letter * 32, mode="preview", input="blob:in:" + "c" * 32, reply=REPLY, user="test:1")
        added[_text(await redis.xadd(settings.tasks_stream, task.encode()))] = task.task_id
    return added


async def deliver_to(redis, settings, consumer: str, count: int) -> None:
    """`consumer` reads `count` tasks and, as far as the stream knows, dies holding them."""
    await redis.xgroup_create(settings.tasks_stream, settings.workers_group, id="0", mkstream=True)
    await redis.xreadgroup(settings.workers_group, consumer, {settings.tasks_stream: ">"}, count=count)


@contextlib.asynccontextmanager
async def worker_running(redis, settings) -> AsyncIterator[WatchingExecutor]:
    executor = WatchingExecutor(redis, settings)
    worker = build_worker(settings, redis, executor=executor)
    run = asyncio.create_task(worker.run())
    try:
        yield executor
    finally:
        worker.stop()
        await asyncio.wait_for(run, timeout=15)


async def wait_for_results(redis, task_ids) -> None:
    for _ in range(300):
        if all([await redis.exists(keys.result(task_id)) for task_id in task_ids]):
            return
        await asyncio.sleep(0.1)
    raise AssertionError("not every task got a result")


async def test_tasks_of_a_dead_worker_run_alone_one_at_a_time_nothing_read_beside_them(settings, redis, caplog):
    settings = settings.model_copy(update={"consumer_lease_s": 1.0})
    suspects = await add_tasks(redis, settings, "abc")
    await deliver_to(redis, settings, "gone-worker-0", count=3)  # no lease: it is dead
    fresh = await add_tasks(redis, settings, "wxyz")
    async with worker_running(redis, settings) as executor:
        await wait_for_results(redis, [*suspects.values(), *fresh.values()])
    for entry_id, task_id in suspects.items():
        assert executor.beside[task_id] == set(), f"{task_id[0]} ran beside {executor.beside[task_id]}"
        ours = {e for e, (consumer, _) in executor.pending_at_start[task_id].items() if consumer != "gone-worker-0"}
        assert ours == {entry_id}, "nothing else is read or taken over while a suspect runs"
    assert any(executor.beside[task_id] for task_id in fresh.values()), "tasks never delivered before share slots"
    assert "it was in flight when a worker died" in caplog.text


async def test_own_pending_after_a_restart_is_read_one_at_a_time_hand_backs_are_no_suspects(settings, redis, caplog):
    own = f"{socket.gethostname().split('.')[0] or 'host'}-worker-0"  # the name the worker takes
    entries = await add_tasks(redis, settings, "hst")
    await deliver_to(redis, settings, own, count=3)
    await redis.hset(keys.task("h" * 32), "handed_back", 1)  # a graceful shutdown handed it back
    async with worker_running(redis, settings) as executor:
        await wait_for_results(redis, entries.values())
    (h_id, _), (s_id, s_task), (t_id, t_task) = entries.items()
    assert executor.beside[s_task] == set() and executor.beside[t_task] == set()
    assert executor.pending_at_start[s_task][s_id][1] == 2
    assert executor.pending_at_start[s_task][t_id][1] == 1, "a read counts a delivery: t is not read while s runs"
    assert executor.pending_at_start[t_task][t_id][1] == 2
    assert f"running task {s_task} alone" in caplog.text and f"running task {'h' * 32} alone" not in caplog.text
