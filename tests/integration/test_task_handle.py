"""TaskHandle against a real redis-server, the worker and the ComfyUI fake: the states a task goes
through, waiting for its result, and cancelling it."""

from __future__ import annotations

import asyncio

import pytest

from backend.replies import LoopbackReply
from backend.services import Services
from backend.task_handle import TaskHandle, TaskState
from tests.support.pipeline import running_pipeline
from tests.support.senders import RecordingSender

REPLY = LoopbackReply()
USER = "test:handle"


def handle(services: Services, task_id: str) -> TaskHandle:
    return TaskHandle(services.redis, task_id, results_stream=services.settings.results_stream)


async def states_until_done(task: TaskHandle) -> list[TaskState]:
    seen: list[TaskState] = []
    while not seen or seen[-1] is not TaskState.DONE:
        state = await task.status()
        if not seen or seen[-1] is not state:
            seen.append(state)
        await asyncio.sleep(0.02)
    return seen


async def test_status_moves_from_queued_through_comfyui_to_done(settings, photo_bytes, comfy_fake):
    comfy_fake.delay_s = 0.5
    async with Services.open(settings) as services:
        assert await handle(services, "0123456789abcdef").status() is TaskState.NOT_FOUND
        submitted = await services.intake.submit(photo_bytes, mode="preview", reply=REPLY, user=USER)
        task = handle(services, submitted.task_id)
        assert await task.status() is TaskState.QUEUED
        assert await task.finished() is None
    async with running_pipeline(settings, {"test": RecordingSender()}) as services:
        task = handle(services, submitted.task_id)
        # The pipeline yields once its notifier reads events; the worker may have taken the task by then.
        assert await asyncio.wait_for(states_until_done(task), 30) in (
            [TaskState.QUEUED, TaskState.IN_COMFYUI, TaskState.DONE],
            [TaskState.IN_COMFYUI, TaskState.DONE],
        )
        finished = await task.finished()
        assert finished is not None and finished.status == "ok" and finished.task_id == submitted.task_id


async def test_result_waits_for_the_worker_and_times_out_without_one(settings, photo_bytes):
    async with Services.open(settings) as services:
        submitted = await services.intake.submit(photo_bytes, mode="preview", reply=REPLY, user=USER)
        task = handle(services, submitted.task_id)
        started = asyncio.get_running_loop().time()
        with pytest.raises(TimeoutError):
            await task.result(0.3)
        assert asyncio.get_running_loop().time() - started < 2
        stop = asyncio.Event()
        stop.set()
        assert await task.result(5, stop=stop) is None  # told to stop: no result, no wait
    async with running_pipeline(settings, {"test": RecordingSender()}) as services:
        task = handle(services, submitted.task_id)
        result = await task.result(30)
        assert result is not None and result.status == "ok" and result.output
        again = await task.result(0.5)  # finished already: the stored result at once
        assert again is not None and again.output == result.output


async def test_cancel_a_queued_task_by_its_owner_only_and_not_once_done(settings, photo_bytes, comfy_fake):
    async with Services.open(settings) as services:
        submitted = await services.intake.submit(photo_bytes, mode="preview", reply=REPLY, user=USER)
        task = handle(services, submitted.task_id)
        assert await task.cancel(user="test:someone-else") is False
        assert await task.cancel(user=USER) is True
        assert await handle(services, "0123456789abcdef").cancel() is False  # no such task
    async with running_pipeline(settings, {"test": RecordingSender()}) as services:
        task = handle(services, submitted.task_id)
        result = await task.result(30)
        assert result is not None and result.status == "cancelled"
        assert await task.status() is TaskState.DONE
        assert await task.cancel() is False  # too late: it is finished
    assert comfy_fake.prompts == {}
