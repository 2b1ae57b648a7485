"""Run repairbot's queue layer for a benchmark: worker processes (no-op executor) and a notifier
process with a counting test sender, against a given Redis; tasks enqueued through intake itself."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from _common import ROOT, child_env, photo

from backend.replies import LoopbackReply

SETTLE_S = 0.3


class QueueLayer:
    """`with QueueLayer(url, workers, expect, tmp) as layer:` starts the processes; `wait()` returns
    the notifier's report (count, first, last, times per task) once `expect` results are delivered."""

    def __init__(self, redis_url: str, workers: int, expect: int, tmp: Path, **env: Any):
        self.redis_url, self.workers, self.expect = redis_url, workers, expect
        self.report = tmp / f"delivered-{time.monotonic_ns()}.json"
        self.env = child_env(
            redis_url,
            EXECUTOR="noop",
            BENCH_EXPECT=expect,
            BENCH_REPORT=self.report,
            QUEUE_CAP=max(500, expect * 2),
            READ_BATCH=env.pop("READ_BATCH", 128),
            BLOCK_MS=200,
            **env,
        )
        self.procs: list[subprocess.Popen[bytes]] = []

    def start_workers(self) -> None:
        for _ in range(self.workers):
            self.procs.append(
                subprocess.Popen(
                    [sys.executable, "-m", "backend.cli", "worker"], cwd=ROOT, env=self.env, stdout=subprocess.DEVNULL
                )
            )

    def start_notifier(self) -> None:
        self.procs.append(
            subprocess.Popen(
                [sys.executable, str(ROOT / "bench" / "_notifier.py")],
                cwd=ROOT,
                env=self.env,
                stdout=subprocess.DEVNULL,
            )
        )

    def wait(self, timeout: float = 600.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while not self.report.exists():
            if time.monotonic() > deadline:
                raise TimeoutError(f"not all {self.expect} results delivered within {timeout:.0f} s")
            for proc in self.procs:
                if proc.poll() is not None:
                    raise RuntimeError(f"a benchmark process exited early ({proc.args}, rc {proc.returncode})")
            time.sleep(0.01)
        return json.loads(self.report.read_text())

    def __enter__(self) -> QueueLayer:
        return self

    def __exit__(self, *exc: Any) -> None:
        for proc in self.procs:
            proc.terminate()
        for proc in self.procs:
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()


async def enqueue(
    redis_url: str, count: int, *, concurrency: int = 32, image: bytes | None = None, rate: float | None = None
) -> tuple[float, dict[str, float]]:
    """Submit `count` tasks through Intake.submit; returns (seconds taken, submit time per task id).

    With `rate`, submissions are paced at that many per second instead of as fast as possible."""
    from backend.services import Services
    from backend.settings import Settings

    settings = Settings(_env_file=None, redis_url=redis_url, queue_cap=max(500, count * 2))
    services = Services.create(settings)
    image = image or photo(8, 8)
    submitted: dict[str, float] = {}
    gate = asyncio.Semaphore(concurrency)

    async def one(index: int) -> None:
        async with gate:
            began = time.time()
            done = await services.intake.submit(
                image, mode="preview", reply=LoopbackReply(), user=f"test:{index}", exempt=True
            )
            submitted[done.task_id] = began

    began = time.perf_counter()
    if rate:
        pending = []
        for index in range(count):
            target = began + index / rate
            delay = target - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            pending.append(asyncio.create_task(one(index)))
        await asyncio.gather(*pending)
    else:
        await asyncio.gather(*(one(index) for index in range(count)))
    took = time.perf_counter() - began
    await services.close()
    return took, submitted


def flush(redis_url: str) -> None:
    import redis

    client = redis.Redis.from_url(redis_url)
    client.flushall()
    client.close()


def drain_rate(report: dict[str, Any], count: int) -> float:
    span = report["last"] - report["first"]
    return (count - 1) / span if span > 0 else float("inf")


def wait_settled() -> None:
    time.sleep(SETTLE_S)


def env_int(name: str, default: int) -> int:
    return int(os.environ.get(name, default))
