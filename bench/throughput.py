"""Throughput of the whole backend: N `preview` tasks through a zero-delay ComfyUI fake.

Starts a private redis-server and the ComfyUI fake, enqueues N tasks through the real intake (timed
on its own: that is the bots' cost), then starts `repairbot worker` and times until every result is
on the results stream: the backlog drain rate of one worker process.
Reports tasks/s per run and the median over runs. Not a test: numbers here are noisy by nature.

    python bench/throughput.py --tasks 1000 --runs 3
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from backend.services import Services  # noqa: E402
from backend.settings import Settings  # noqa: E402
from tests.support.redis_server import RedisServer, free_port  # noqa: E402

PHOTO = ROOT.parent / "shared" / "photos" / "astronaut_gray.jpg"


def wait_for_port(port: int, timeout: float = 20) -> None:
    import socket

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise RuntimeError(f"nothing listens on {port}")


async def one_run(tasks: int, prefetch: int, workdir: Path) -> float:
    redis = RedisServer(workdir / "redis").start()
    comfy_port = free_port()
    env = {**os.environ, "REDIS_URL": redis.url, "COMFYUI_URL": f"http://127.0.0.1:{comfy_port}",
           "PREFETCH": str(prefetch), "LOG_LEVEL": "WARNING", "PYTHONPATH": str(ROOT), "QUEUE_CAP": str(tasks * 2)}
    fake = subprocess.Popen([sys.executable, "-m", "tests.fakes.comfyui", "--port", str(comfy_port)], cwd=ROOT,
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    repairbot = shutil.which("repairbot") or sys.executable
    worker_cmd = [repairbot, "worker"] if repairbot.endswith("repairbot") else [repairbot, "-m", "backend.cli", "worker"]
    worker = None
    try:
        wait_for_port(comfy_port)
        settings = Settings(_env_file=None, redis_url=redis.url, comfyui_url=f"http://127.0.0.1:{comfy_port}",
                            queue_cap=tasks * 2)
        services = Services.create(settings)
        photo = PHOTO.read_bytes()
        began = time.perf_counter()
        for index in range(tasks):
            await services.intake.submit(photo, mode="preview", reply={"platform": "cli"}, user=f"cli:bench{index}",
                                         exempt=True)
        enqueue_s = time.perf_counter() - began
        started = time.perf_counter()
        worker = subprocess.Popen(worker_cmd, cwd=workdir, env=env, stdout=subprocess.DEVNULL,
                                  stderr=subprocess.DEVNULL)
        while await services.redis.xlen(settings.results_stream) < tasks:
            await asyncio.sleep(0.05)
        elapsed = time.perf_counter() - started
        ok = sum(1 for _, f in await services.redis.xrange(settings.results_stream) if f[b"status"] == b"ok")
        print(f"  {tasks} tasks ({ok} ok) drained in {elapsed:.1f} s: {tasks / elapsed:.1f} tasks/s "
              f"(worker start included); intake {tasks / enqueue_s:.1f} photos/s")
        await services.close()
        return tasks / elapsed
    finally:
        for proc in (worker, fake):
            if proc is not None:
                proc.terminate()
                proc.wait(timeout=30)
        redis.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=1000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--prefetch", type=int, default=2)
    args = parser.parse_args()
    rates = []
    for run in range(args.runs):
        print(f"run {run + 1}/{args.runs}")
        with tempfile.TemporaryDirectory() as tmp:
            rates.append(asyncio.run(one_run(args.tasks, args.prefetch, Path(tmp))))
    print(f"median {statistics.median(rates):.1f} tasks/s over {args.runs} runs "
          f"(min {min(rates):.1f}, max {max(rates):.1f}); {os.cpu_count()} cores")


if __name__ == "__main__":
    main()
