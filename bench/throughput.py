"""Throughput of the whole backend: N `preview` tasks through a zero-delay ComfyUI fake.

Starts a private redis-server and the ComfyUI fake, enqueues N tasks through the real intake (timed
on its own: that is the bots' cost), then starts `repairbot worker` and times until every result is
on the results stream: the backlog drain rate of one worker process.
Reports tasks/s per run and the median over runs. Not a test: numbers here are noisy by nature.

    python bench/throughput.py --tasks 1000 --runs 3
    python bench/throughput.py --tasks 100 --delay 0.2 --prefetch 0   # GPU duty cycle without prefetch
    python bench/throughput.py --tasks 100 --delay 0.2 --prefetch 2   # ... and with it

With --delay the fake spends that long per prompt, like a GPU would; the duty cycle is the share of
the drain time ComfyUI was executing a prompt (the sum of its own execution_start → execution_success
times, as the results carry them, over the drain time).
"""

from __future__ import annotations

import sys

sys.path.append(sys.path.pop(0))  # bench/ last: its queue.py must not hide the standard library's queue

import argparse
import asyncio
import os
import shutil
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from backend.replies import CliReply  # noqa: E402
from backend.services import Services  # noqa: E402
from backend.settings import Settings  # noqa: E402
from tests.support.redis_server import RedisServer, free_port  # noqa: E402

PHOTO = ROOT / "tests" / "data" / "photos" / "astronaut_gray.jpg"


def wait_for_port(port: int, timeout: float = 20) -> None:
    import socket

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise RuntimeError(f"nothing listens on {port}")


async def one_run(tasks: int, prefetch: int, delay: float, workdir: Path) -> tuple[float, float]:
    """(tasks/s, GPU duty cycle) of one drain."""
    redis = RedisServer(workdir / "redis").start()
    comfy_port = free_port()
    env = {
        **os.environ,
        "REDIS_URL": redis.url,
        "COMFYUI_URL": f"http://127.0.0.1:{comfy_port}",
        "PREFETCH": str(prefetch),
        "LOG_LEVEL": "WARNING",
        "PYTHONPATH": str(ROOT),
        "QUEUE_CAP": str(tasks * 2),
    }
    fake = subprocess.Popen(
        [sys.executable, "-m", "tests.fakes.comfyui", "--port", str(comfy_port), "--delay", str(delay)],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    repairbot = shutil.which("repairbot") or sys.executable
    worker_cmd = (
        [repairbot, "worker"] if repairbot.endswith("repairbot") else [repairbot, "-m", "backend.cli", "worker"]
    )
    worker = None
    try:
        wait_for_port(comfy_port)
        settings = Settings(
            _env_file=None, redis_url=redis.url, comfyui_url=f"http://127.0.0.1:{comfy_port}", queue_cap=tasks * 2
        )
        services = Services.create(settings)
        photo = PHOTO.read_bytes()
        began = time.perf_counter()
        for index in range(tasks):
            await services.intake.submit(photo, mode="preview", reply=CliReply(), user=f"cli:bench{index}", exempt=True)
        enqueue_s = time.perf_counter() - began
        started = time.perf_counter()
        worker = subprocess.Popen(
            worker_cmd, cwd=workdir, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        while await services.redis.xlen(settings.results_stream) < tasks:
            await asyncio.sleep(0.05)
        elapsed = time.perf_counter() - started
        results = [fields for _, fields in await services.redis.xrange(settings.results_stream)]
        ok = sum(1 for fields in results if fields[b"status"] == b"ok")
        busy_s = sum(int(fields[b"run_ms"]) for fields in results) / 1000  # ComfyUI's own execution times
        print(
            f"  {tasks} tasks ({ok} ok) drained in {elapsed:.1f} s: {tasks / elapsed:.1f} tasks/s "
            f"(worker start included); intake {tasks / enqueue_s:.1f} photos/s"
            + (f"; GPU duty cycle {busy_s / elapsed:.0%}" if delay else "")
        )
        await services.close()
        return tasks / elapsed, busy_s / elapsed
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
    parser.add_argument("--delay", type=float, default=0.0, help="seconds the fake spends per prompt")
    args = parser.parse_args()
    rates, duties = [], []
    for run in range(args.runs):
        print(f"run {run + 1}/{args.runs}")
        with tempfile.TemporaryDirectory() as tmp:
            rate, duty = asyncio.run(one_run(args.tasks, args.prefetch, args.delay, Path(tmp)))
        rates.append(rate)
        duties.append(duty)
    print(
        f"median {statistics.median(rates):.1f} tasks/s over {args.runs} runs "
        f"(min {min(rates):.1f}, max {max(rates):.1f}); {os.cpu_count()} cores; prefetch {args.prefetch}"
        + (f"; median GPU duty cycle {statistics.median(duties):.0%}" if args.delay else "")
    )


if __name__ == "__main__":
    main()
