"""SIGTERM with tasks in flight: a real worker subprocess finishes what runs and exits promptly,
even when ComfyUI fails just then (waiting tasks are handed back at once, not after the grace)."""

from __future__ import annotations

import asyncio
import signal
import time

from backend import keys
from backend.replies import LoopbackReply
from backend.services import Services
from tests.e2e.test_cli_e2e import Stack, stack_env

REPLY = LoopbackReply()


async def three_in_flight(redis, redis_url, settings, comfy_fake, photo_bytes, tmp_path, delay_s=0.2):
    comfy_fake.delay_s = delay_s
    stack = Stack(stack_env(redis_url, comfy_fake.url, tmp_path, SHUTDOWN_GRACE_S="30"), tmp_path)
    worker = await stack.start("worker", "worker")
    async with Services.open(settings) as services:
        ids = [
            (await services.intake.submit(photo_bytes, mode="preview", reply=REPLY, user=f"test:{n}")).task_id
            for n in range(3)
        ]
    for _ in range(500):  # all three in ComfyUI (one running, two queued behind it)
        if len(comfy_fake.prompts) == 3:
            break
        await asyncio.sleep(0.01)
    assert len(comfy_fake.prompts) == 3
    return stack, worker, ids


async def sigterm(stack, worker) -> float:
    worker.send_signal(signal.SIGTERM)
    sent = time.monotonic()
    code = await asyncio.wait_for(worker.wait(), 40)
    stack.procs.pop("worker")
    assert code == 0, stack.log("worker")
    return time.monotonic() - sent


async def test_sigterm_with_three_tasks_in_flight_finishes_them_and_exits(
    redis, redis_url, settings, comfy_fake, photo_bytes, tmp_path
):
    stack, worker, ids = await three_in_flight(redis, redis_url, settings, comfy_fake, photo_bytes, tmp_path)
    took_s = await sigterm(stack, worker)
    assert took_s < 10, f"exited {took_s:.1f} s after SIGTERM:\n{stack.log('worker')}"
    done = {fields[b"task_id"].decode() for _, fields in await redis.xrange(settings.results_stream)}
    assert done == set(ids), "the three tasks in flight finish within the grace period"


async def test_sigterm_while_comfyui_fails_hands_back_at_once_instead_of_sitting_out_the_grace(
    redis, redis_url, settings, comfy_fake, photo_bytes, tmp_path
):
    stack, worker, ids = await three_in_flight(redis, redis_url, settings, comfy_fake, photo_bytes, tmp_path, 1.0)
    comfy_fake.http_500 = True  # the tasks now only wait for an instance that is down
    took_s = await sigterm(stack, worker)
    assert took_s < 10, f"exited {took_s:.1f} s after SIGTERM (grace is 30 s):\n{stack.log('worker')}"
    results = [fields for _, fields in await redis.xrange(settings.results_stream)]
    assert all(fields[b"status"] == b"ok" for fields in results), "nothing failed for it"
    # the prompt running in ComfyUI may still finish: its image and its success come over the socket,
    # which HTTP errors don't touch; the two waiting behind it are handed back
    finished = {fields[b"task_id"].decode() for fields in results}
    assert len(finished) <= 1, stack.log("worker")
    waiting = [task_id for task_id in ids if task_id not in finished]
    summary = await redis.xpending(settings.tasks_stream, settings.workers_group)
    handed_back = [int(await redis.hget(keys.task(task_id), "handed_back") or 0) for task_id in waiting]
    assert summary["pending"] == len(waiting) and handed_back == [1] * len(waiting), stack.log("worker")
