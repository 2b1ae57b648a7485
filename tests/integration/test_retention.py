"""Dead letters are trimmed by age and by length, each trimmed one logged; fs blobs are swept on a timer
by the ops loop; the queue collector exports from one process at a time."""

from __future__ import annotations

import asyncio
import logging
import os
import time

from backend import metrics, retention
from backend.processes import build_ops
from backend.services import make_blob_store
from backend.tasks import now_ms


async def add_dead(redis, settings, count: int, *, age_s: float = 0) -> None:
    start = now_ms() - int(age_s * 1000)
    for n in range(count):
        await redis.xadd(settings.dead_stream, {"task_id": f"t{n:03d}", "reason": "test"}, id=f"{start}-{n}")


def dead_limits(settings) -> dict:
    return {k: getattr(settings, k) for k in ("dead_stream", "dead_max_len", "dead_max_age_s")}


async def test_dead_letters_past_the_age_limit_are_trimmed_and_logged(redis, settings, caplog):
    settings = settings.model_copy(update={"dead_max_age_s": 3600, "dead_max_len": 1000})
    await add_dead(redis, settings, 3, age_s=7200)
    await redis.xadd(settings.dead_stream, {"task_id": "fresh", "reason": "test"})
    with caplog.at_level(logging.INFO, logger="backend.retention"):
        assert await retention.trim_dead_letters(redis, **dead_limits(settings)) == 3
    assert [f[b"task_id"] for _, f in await redis.xrange(settings.dead_stream)] == [b"fresh"]
    trimmed = [r.getMessage() for r in caplog.records if "trimmed dead letter" in r.getMessage()]
    assert len(trimmed) == 3 and "task t000, reason test" in trimmed[0] and "too old" in trimmed[0]


async def test_dead_letters_over_the_length_limit_lose_the_oldest(redis, settings):
    settings = settings.model_copy(update={"dead_max_len": 5})
    await add_dead(redis, settings, 8)
    assert await retention.trim_dead_letters(redis, **dead_limits(settings)) == 3
    left = [f[b"task_id"] for _, f in await redis.xrange(settings.dead_stream)]
    assert left == [b"t003", b"t004", b"t005", b"t006", b"t007"]
    assert await retention.trim_dead_letters(redis, **dead_limits(settings)) == 0


async def test_ops_sweeps_expired_blob_files_and_trims_dead_letters(redis, settings):
    settings = settings.model_copy(
        update={"blob_store": "fs", "blob_ttl_s": 60, "dead_max_len": 1, "ops_interval_s": 0.05}
    )
    blobs = make_blob_store(settings, redis)
    old, new = await blobs.put("in", b"old"), await blobs.put("in", b"new")
    stale = time.time() - 120
    os.utime(blobs._path(old), (stale, stale))
    await add_dead(redis, settings, 2)
    stop = asyncio.Event()
    runner = asyncio.create_task(build_ops(settings, redis, blobs=blobs).run(stop))
    for _ in range(100):
        if await blobs.get(old) is None and await redis.xlen(settings.dead_stream) == 1:
            break
        await asyncio.sleep(0.05)
    stop.set()
    await runner
    assert await blobs.get(old) is None and await blobs.get(new) == b"new"
    assert await redis.xlen(settings.dead_stream) == 1


async def test_only_one_process_exports_the_queue_gauges(redis, settings):
    first, second = build_ops(settings, redis), build_ops(settings, redis)
    await first.tick()
    await second.tick()
    assert first.collector.numbers is not None and second.collector.numbers is None
    assert list(second.collector.collect()) == []
    names = {family.name for family in first.collector.collect()}
    assert {"repairbot_queue_depth_tasks", "repairbot_group_lag_entries"} <= names
    await first.collector_lease.release()
    await second.tick()
    assert second.collector.numbers is not None
    assert metrics.scrape()  # the registry still renders
