"""Worker CPU per task, everything outside ComfyUI: 512 px photos and 12 MP documents.

The fake ComfyUI runs in this process with zero service time and its pixel work swapped for a cached
tinted result of the right size (gpu_duty.py's FixedServiceFake), so the worker process is the only
one doing per-task work on its side. Its CPU time (user + system, from /proc) is read when the first
result appears and when the last does; the difference over the tasks between is the figure.

    python3 bench/worker_cpu.py --runs 3
"""

from __future__ import annotations

import sys

sys.path.append(sys.path.pop(0))  # bench/ last: its queue.py must not hide the standard library's queue

import asyncio  # noqa: E402
import os  # noqa: E402
import subprocess  # noqa: E402
from pathlib import Path  # noqa: E402

from _common import ROOT, cell, child_env, parser, photo, print_table, private_redis, summary, write_json  # noqa: E402
from gpu_duty import FixedServiceFake  # noqa: E402

from backend.replies import CliReply  # noqa: E402

SIZES = [("512x512 JPEG", 512, 512, 300), ("4000x3000 JPEG (12 MP)", 4000, 3000, 30)]
TICKS = os.sysconf("SC_CLK_TCK")


def cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS  # utime, stime


async def one_run(url: str, width: int, height: int, tasks: int) -> float:
    from backend.services import Services
    from backend.settings import Settings

    fake = FixedServiceFake(0.0, mbit=1e6, rtt_ms=0.0)
    await fake.fake.start()
    settings = Settings(_env_file=None, redis_url=url, comfyui_url=fake.fake.url, queue_cap=10**6)
    services = Services.create(settings, comfyui=False)
    await services.redis.flushall()
    data = [photo(width, height, seed=index) for index in range(min(tasks, 8))]
    for index in range(tasks):
        await services.intake.submit(
            data[index % len(data)], mode="person", reply=CliReply(), user=f"cli:c{index}", exempt=True
        )
    worker = subprocess.Popen(
        [sys.executable, "-m", "backend.cli", "worker"],
        cwd=ROOT,
        env=child_env(url, COMFYUI_URL=fake.fake.url),
        stdout=subprocess.DEVNULL,
    )
    first = None
    try:
        while (done := await services.redis.xlen(settings.results_stream)) < tasks:
            if done and first is None:
                first, first_done = cpu_s(worker.pid), done
            if worker.poll() is not None:
                raise RuntimeError("the worker exited")
            await asyncio.sleep(0.002)
        last = cpu_s(worker.pid)
        statuses = [f[b"status"] for _, f in await services.redis.xrange(settings.results_stream)]
        if statuses.count(b"ok") != tasks:
            raise RuntimeError(f"not every task succeeded: {set(statuses)}")
    finally:
        worker.terminate()
        worker.wait(timeout=30)
        await services.close()
        await fake.fake.stop()
    return (last - first) * 1000 / (tasks - first_done)


def main() -> None:
    args = parser(__doc__.splitlines()[0]).parse_args()
    runs = 1 if args.quick else args.runs
    rows, figures = [], {}
    with private_redis() as url:
        for name, width, height, tasks in SIZES:
            tasks = max(4, tasks // 20) if args.quick else tasks
            values = [asyncio.run(one_run(url, width, height, tasks)) for _ in range(runs)]
            figures[name] = summary(values)
            rows.append([name, tasks, cell(figures[name], "{:.1f}")])
            print(f"  {name}: {rows[-1][2]} ms", flush=True)
    print_table(
        f"Worker CPU per task outside ComfyUI, median of {runs} (min–max)", ["photo", "tasks", "CPU ms/task"], rows
    )
    write_json("worker_cpu", args.out, {"figures": figures})


if __name__ == "__main__":
    main()
