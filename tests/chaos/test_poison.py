"""A photo that kills whichever worker takes it: dead-lettered after MAX_DELIVERIES, its user told once,
every other photo delivered, including those the same worker held when it died.

detect: the kill that starts it all → the poison in the dead-letter stream; recover: → its user told."""

from __future__ import annotations

import asyncio
import contextlib
import json

import pytest

from backend.texts import text
from tests.chaos.ledger import assert_clean


@pytest.mark.timeout(200)
async def test_poison_photo(chaos, ledger):
    async with chaos(env={"MIN_IDLE_MS": "3000", "MAX_DELIVERIES": "3"}, comfy_delay_s=0.1) as stack:
        await stack.start_default(workers=1)
        poison = await stack.send_telegram_photo()
        crashes = 0
        done = asyncio.Event()  # the helpers end on it too: a cancellation alone can be swallowed

        async def crash_on_poison() -> None:
            """As if running this photo took the worker down: each new ComfyUI prompt for the poison
            kills the worker that queued it."""
            nonlocal crashes
            seen: set[str] = set()
            while not done.is_set():
                poison_tasks = (await stack.task_ids()).get(poison.chat_id, [])
                fresh = {pid for pid, task in list(stack.prompt_tasks.items()) if task in poison_tasks} - seen
                if fresh:
                    seen |= fresh
                    if stack.components["worker1"].alive:
                        crashes += 1
                        ledger.fault()
                        await stack.kill("worker1")
                await asyncio.sleep(0.02)

        async def supervise() -> None:
            """What systemd or Kubernetes would do: start the worker again when it dies."""
            while not done.is_set():
                component = stack.components["worker1"]
                if not component.alive:
                    await component.proc.wait()
                    await stack.spawn("worker1", "worker")
                await asyncio.sleep(0.2)

        supervisor = asyncio.create_task(supervise())
        crasher = asyncio.create_task(crash_on_poison())
        others = await stack.send_telegram_photos(3)
        try:
            await stack.wait_for(stack.dead_letters, timeout=150)
            ledger.detected()
            await stack.wait_for(lambda: stack.outcome(poison).refused, timeout=30)
            ledger.recovered()
            assert await stack.wait_answered(others, timeout=60), stack.logs()
        finally:
            done.set()
            for helper in (crasher, supervisor):
                helper.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await helper
        await stack.settle(extra_s=3)
        told = [t for t in stack.outcome(poison).texts if t == text("too_many_attempts", "en")]
        ledger.note(f"worker crashed {crashes} times on the poison; user told {len(told)} time(s)")
        dead_chats = [json.loads(d.get("reply", "{}")).get("chat_id") for d in await stack.dead_letters()]
        ledger.note(f"dead-lettered chats {dead_chats} (the poison is {poison.chat_id})")
        await stack.fill_ledger()
    assert_clean(ledger, dead=1)
    assert len(told) == 1, ledger
    assert ledger.delivered == 3 and ledger.refused == 1, ledger
