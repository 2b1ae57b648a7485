"""Memory: Redis bytes per queued task (outside its blob) and per blob, and the worker's RSS with
10,000 tasks waiting (idle beside the backlog, and at its peak while it drains it).

Tasks are queued through intake (a 512 px JPEG each; telegram-shaped reply channel) into a private
redis-server; the blobs' own cost is MEMORY USAGE summed over them, the rest of the growth in
used_memory is what a queued task costs. The worker runs the no-op executor.

    python3 bench/memory.py --tasks 10000
"""

from __future__ import annotations

import sys

sys.path.append(sys.path.pop(0))  # bench/ last: its queue.py must not hide the standard library's queue

import asyncio  # noqa: E402
import subprocess  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

from _common import ROOT, cell, child_env, parser, photo, print_table, private_redis, summary, write_json  # noqa: E402

from backend.replies import TelegramReply  # noqa: E402

REPLY = TelegramReply(chat_id=123456789, message_id=4242, status_message_id=4243, lang="en")


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


async def one_run(url: str, tasks: int) -> dict[str, float]:
    from backend.services import Services
    from backend.settings import Settings

    settings = Settings(_env_file=None, redis_url=url, queue_cap=10**7)
    services = Services.create(settings, comfyui=False)
    redis = services.redis
    await redis.flushall()
    data = photo(512, 512)
    await services.intake.submit(data, mode="person", reply=REPLY, user="telegram:0", exempt=True)  # streams exist
    before = int((await redis.info("memory"))["used_memory"])
    for index in range(tasks):
        await services.intake.submit(data, mode="person", reply=REPLY, user=f"telegram:{index + 1}", exempt=True)
    grown = int((await redis.info("memory"))["used_memory"]) - before
    blob_bytes = 0
    async for key in redis.scan_iter(match="blob:*", count=1000):
        blob_bytes += int(await redis.memory_usage(key, samples=0) or 0)
    blob_bytes = blob_bytes * tasks // (tasks + 1)
    per_task = (grown - blob_bytes) / tasks
    per_blob = blob_bytes / tasks

    worker = subprocess.Popen(
        [sys.executable, "-m", "backend.cli", "worker"],
        cwd=ROOT,
        env=child_env(url, EXECUTOR="noop"),
        stdout=subprocess.DEVNULL,
    )
    try:
        await redis.set("repairbot:paused", "1")
        await asyncio.sleep(3.0)  # started, sees the backlog, reads nothing while paused
        idle = rss_kib(worker.pid)
        await redis.delete("repairbot:paused")
        peak = idle
        while await redis.xlen(settings.results_stream) < tasks + 1:
            peak = max(peak, rss_kib(worker.pid))
            await asyncio.sleep(0.05)
    finally:
        worker.terminate()
        worker.wait(timeout=30)
        await services.close()
    return {
        "per_task_bytes": per_task,
        "per_blob_bytes": per_blob,
        "blob_overhead_bytes": per_blob - len(data),
        "worker_idle_rss_mib": idle / 1024,
        "worker_peak_rss_mib": peak / 1024,
        "photo_bytes": len(data),
    }


def main() -> None:
    parse = parser(__doc__.splitlines()[0], runs=1)
    parse.add_argument("--tasks", type=int, default=10000)
    args = parse.parse_args()
    tasks, runs = (100, 1) if args.quick else (args.tasks, args.runs)
    results = []
    with private_redis() as url:
        for _ in range(runs):
            results.append(asyncio.run(one_run(url, tasks)))
            time.sleep(0.5)
    figures = {key: summary([r[key] for r in results]) for key in results[0]}
    print_table(
        f"Memory, {tasks} tasks waiting, median of {runs} (min–max)",
        ["figure", "value"],
        [
            ["Redis per queued task, outside the blob", cell(figures["per_task_bytes"], "{:,.0f} B")],
            [f"Redis per blob ({results[0]['photo_bytes']:,} B JPEG)", cell(figures["per_blob_bytes"], "{:,.0f} B")],
            ["worker RSS beside the backlog (paused)", cell(figures["worker_idle_rss_mib"], "{:.1f} MiB")],
            ["worker RSS peak while draining it", cell(figures["worker_peak_rss_mib"], "{:.1f} MiB")],
        ],
    )
    write_json("memory", args.out, {"tasks": tasks, "figures": figures})


if __name__ == "__main__":
    main()
