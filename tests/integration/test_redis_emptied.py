"""Redis restarted empty while a worker holds a task: the worker keeps it, finishes it, and
publishes the result once Redis is back; the notifier's group is re-created and delivers it."""

from __future__ import annotations

import asyncio

from redis.asyncio import Redis

from backend.processes import build_notifier
from backend.replies import LoopbackReply
from backend.services import Services
from tests.e2e.test_cli_e2e import Stack, prompt_reached, stack_env
from tests.support.redis_server import RedisServer
from tests.support.senders import RecordingSender

REPLY = LoopbackReply()


async def test_a_task_in_hand_survives_redis_restarting_empty(settings, comfy_fake, photo_bytes, tmp_path):
    server = RedisServer(tmp_path / "redis").start()  # no AOF: a restart comes back empty
    settings = settings.model_copy(update={"redis_url": server.url})
    comfy_fake.delay_s = 1.0
    stack = Stack(stack_env(server.url, comfy_fake.url, tmp_path), tmp_path)
    redis = Redis.from_url(server.url)
    try:
        await stack.start("worker", "worker")
        async with Services.open(settings) as services:
            submitted = await services.intake.submit(photo_bytes, mode="preview", reply=REPLY, user="test:1")
        await prompt_reached(comfy_fake)
        server.stop(kill=True)
        await asyncio.sleep(2.5)  # still down when the prompt is done: the worker holds the output
        server.start()
        assert not await redis.exists(f"repairbot:task:{submitted.task_id}"), "it came back empty"

        sender = RecordingSender()
        notifier = build_notifier(settings, redis, {"test": sender})
        running = asyncio.create_task(notifier.run())
        try:
            [result] = await sender.wait_for_results(1, timeout=20)
        finally:
            notifier.stop()
            await running
        assert result.task_id == submitted.task_id and result.status == "ok", stack.log("worker")
        assert "keeping" in stack.log("worker"), stack.log("worker")
        # The worker stores the output it kept as soon as Redis answers; its read loop, still backing
        # off, finds the group gone a moment later (on a loaded machine, after the result is out).
        await stack.wait_for_log("worker", "Redis lost its data", timeout=10)
    finally:
        await stack.close()
        await redis.aclose()
        server.stop()
