"""`dlq retry <task_id>` finds a dead letter however old it is, not only among the newest."""

from __future__ import annotations

from backend import admin as admin_module
from backend.replies import LoopbackReply
from backend.services import Services
from backend.tasks import Task, dead_letter_fields


async def test_retry_finds_the_oldest_of_many_dead_letters(settings, monkeypatch):
    monkeypatch.setattr(admin_module, "DEAD_PAGE", 7)  # many pages without writing thousands
    services = Services.create(settings, comfyui=False)
    try:
        tasks = [
            Task(
                task_id=f"{n:032x}",
                mode="person",
                input="blob:in:" + "a" * 32,
                reply=LoopbackReply(),
                user=f"test:{n}",
            )
            for n in range(30)
        ]
        for task in tasks:
            await services.redis.xadd(
                settings.dead_stream,
                dead_letter_fields(
                    task.encode(),
                    source=settings.tasks_stream,
                    entry_id="1-1",
                    reason="gave up",
                    deliveries=4,
                    last_error="x",
                ),
            )
        oldest = tasks[0].task_id
        outcome = await services.admin.retry_dead(oldest)
        assert outcome.ok and outcome.task_id == oldest
        [(_, fields)] = await services.redis.xrange(settings.tasks_stream)
        assert Task.decode(fields).task_id == oldest
        assert not (await services.admin.retry_dead("f" * 32)).ok
    finally:
        await services.close()
