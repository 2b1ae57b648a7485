"""arq, tuned, for the same trip: `enqueue` N no-op jobs, then `worker` runs them in burst mode.

Tuning: poll_delay 0, max_jobs 1000, no result kept, no retries, health check off. The job itself
records its finish time; the report (first and last) is written once N have run.
"""

from __future__ import annotations

import sys

sys.path.append(sys.path.pop(0))  # bench/ last: its queue.py must not hide the standard library's queue

import asyncio
import json
import os
import time
from pathlib import Path

from arq import create_pool
from arq.connections import RedisSettings
from arq.worker import Worker

STATE = {"count": 0, "first": 0.0, "last": 0.0}


async def noop(ctx: dict, task_id: str) -> None:
    now = time.time()
    STATE["count"] += 1
    STATE["first"] = STATE["first"] or now
    STATE["last"] = now
    if STATE["count"] == int(os.environ["BENCH_EXPECT"]):
        Path(os.environ["BENCH_REPORT"]).write_text(json.dumps(STATE))


async def enqueue(count: int) -> None:
    pool = await create_pool(RedisSettings.from_dsn(os.environ["REDIS_URL"]))
    for start in range(0, count, 500):
        await asyncio.gather(*(pool.enqueue_job("noop", f"{i:032x}") for i in range(start, min(count, start + 500))))
    await pool.aclose()


def work() -> None:
    worker = Worker(
        functions=[noop],
        redis_settings=RedisSettings.from_dsn(os.environ["REDIS_URL"]),
        burst=True,
        poll_delay=0,
        max_jobs=1000,
        keep_result=0,
        max_tries=1,
        health_check_interval=3600,
        handle_signals=False,
    )
    worker.run()


if __name__ == "__main__":
    if sys.argv[1] == "enqueue":
        asyncio.run(enqueue(int(os.environ["BENCH_EXPECT"])))
    else:
        work()
