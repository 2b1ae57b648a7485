"""End to end through the zero-delay ComfyUI fake: repairbot's worker against a minimal direct client.

The fake (`python -m tests.fakes.comfyui`, its own process, zero delay, real pixel work on 512 px
photos) serves both in the same run. Direct: the minimal client (bench/_comfy_direct.py) keeps as
many prompts in flight as the worker's slots (worker_concurrency + prefetch). repairbot: the tasks
are queued through intake, then one `repairbot worker` drains them. Both rates count results from
the first to the last.

    python3 bench/comfy_e2e.py --tasks 200 --runs 3
"""

from __future__ import annotations

import sys

sys.path.append(sys.path.pop(0))  # bench/ last: its queue.py must not hide the standard library's queue

import asyncio  # noqa: E402
import subprocess  # noqa: E402
import time  # noqa: E402

from _comfy_direct import DirectClient  # noqa: E402
from _common import (  # noqa: E402
    ROOT,
    cell,
    child_env,
    free_port,
    parser,
    photo,
    print_table,
    private_redis,
    summary,
    wait_for_port,
    write_json,
)

from backend.replies import CliReply  # noqa: E402

SLOTS = 3  # worker_concurrency 1 + prefetch 2, the defaults


async def direct(url: str, inputs: list[bytes]) -> float:
    from backend.workflows import Workflows

    mode = Workflows.load(ROOT / "workflows").get("preview")
    queue = list(enumerate(inputs))
    finished: list[float] = []
    async with DirectClient(url, lambda name, pid: mode.build(name, task_id=pid), mode.output_node) as client:

        async def lane() -> None:
            while queue:
                index, data = queue.pop()
                await client.run(data, f"direct-{index}.jpg")
                finished.append(time.perf_counter())

        await asyncio.gather(*(lane() for _ in range(SLOTS)))
    return (len(inputs) - 1) / max(0.001, finished[-1] - finished[0])  # first to last, as for repairbot


async def repairbot(comfy_url: str, inputs: list[bytes], redis_url: str) -> float:
    from backend.services import Services
    from backend.settings import Settings

    settings = Settings(_env_file=None, redis_url=redis_url, comfyui_url=comfy_url, queue_cap=10**6)
    services = Services.create(settings, comfyui=False)
    await services.redis.flushall()
    for index, data in enumerate(inputs):
        await services.intake.submit(data, mode="preview", reply=CliReply(), user=f"cli:e{index}", exempt=True)
    worker = subprocess.Popen(
        [sys.executable, "-m", "backend.cli", "worker"],
        cwd=ROOT,
        env=child_env(redis_url, COMFYUI_URL=comfy_url),
        stdout=subprocess.DEVNULL,
    )
    try:
        while await services.redis.xlen(settings.results_stream) < len(inputs):
            if worker.poll() is not None:
                raise RuntimeError("the worker exited")
            await asyncio.sleep(0.02)
        results = [fields for _, fields in await services.redis.xrange(settings.results_stream)]
    finally:
        worker.terminate()
        worker.wait(timeout=30)
        await services.close()
    if sum(1 for f in results if f[b"status"] == b"ok") != len(inputs):
        raise RuntimeError("not every task succeeded")
    finished = sorted(int(f[b"finished_at"]) for f in results)
    return (len(inputs) - 1) / max(0.001, (finished[-1] - finished[0]) / 1000)


def main() -> None:
    parse = parser(__doc__.splitlines()[0])
    parse.add_argument("--tasks", type=int, default=200)
    args = parse.parse_args()
    tasks, runs = (6, 1) if args.quick else (args.tasks, args.runs)
    inputs = [photo(512, 512, seed=index) for index in range(tasks)]
    port = free_port()
    fake = subprocess.Popen(
        [sys.executable, "-m", "tests.fakes.comfyui", "--port", str(port)],
        cwd=ROOT,
        env=child_env("redis://unused"),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    comfy_url = f"http://127.0.0.1:{port}"
    results = []
    try:
        wait_for_port(port)
        with private_redis() as redis_url:
            asyncio.run(direct(comfy_url, inputs[:2]))  # warm up
            for run in range(runs):
                served = asyncio.run(direct(comfy_url, inputs))
                ours = asyncio.run(repairbot(comfy_url, inputs, redis_url))
                results.append({"direct": served, "repairbot": ours, "ratio": ours / served})
                print(f"run {run + 1}/{runs}: direct {served:.1f}/s, repairbot {ours:.1f}/s", flush=True)
    finally:
        fake.terminate()
        fake.wait(timeout=10)
    figures = {key: summary([r[key] for r in results]) for key in ("direct", "repairbot", "ratio")}
    print_table(
        f"Through the zero-delay fake, {tasks} 512 px photos, {SLOTS} in flight, median of {runs} (min–max)",
        ["client", "tasks/s"],
        [
            ["minimal direct client", cell(figures["direct"], "{:.1f}")],
            ["repairbot worker", cell(figures["repairbot"], "{:.1f}")],
            ["repairbot / direct", cell(figures["ratio"], "{:.0%}")],
        ],
    )
    write_json("comfy_e2e", args.out, {"tasks": tasks, "slots": SLOTS, "figures": figures})


if __name__ == "__main__":
    main()
