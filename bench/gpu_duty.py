"""GPU duty cycle: how much of the time a ComfyUI with a fixed service time spends executing.

The fake ComfyUI (tests/fakes/comfyui, in this process) takes exactly --service seconds per prompt
(its pixel work is swapped for a cached result of the right size, so the service time is fixed);
uploads and /view downloads are delayed as over a --mbit link with --rtt-ms latency. Tasks alternate
12 MP documents (4000x3000 JPEG) and Telegram's 1280 px photos. Measured against repairbot's worker
(a separate process, default prefetch) and, in the same run, a one-task-at-a-time client (upload,
prompt, wait, download, then the next). Duty = prompts x service time / first start to last end.

    python3 bench/gpu_duty.py --tasks 40 --service 0.2 --runs 3
"""

from __future__ import annotations

import sys

sys.path.append(sys.path.pop(0))  # bench/ last: its queue.py must not hide the standard library's queue

import asyncio  # noqa: E402
import io  # noqa: E402
import subprocess  # noqa: E402
import time  # noqa: E402

from _comfy_direct import DirectClient  # noqa: E402
from _common import ROOT, cell, child_env, parser, photo, print_table, private_redis, summary, write_json  # noqa: E402

from backend.replies import CliReply  # noqa: E402

SIZES = [(4000, 3000), (1280, 960)]


class FixedServiceFake:
    """The ComfyUI fake with fixed service time, link delays and a record of when it executed."""

    def __init__(self, service_s: float, mbit: float, rtt_ms: float):
        from PIL import Image

        from tests.fakes.comfyui import FakeComfyUI, nodes
        from tests.fakes.comfyui import executor as fake_executor

        self.intervals: list[tuple[float, float]] = []
        self.bytes_per_s = mbit * 1e6 / 8
        self.rtt_s = rtt_ms / 1000
        outputs: dict[tuple[int, int], bytes] = {}

        def cached_png(image: Image.Image, text: dict[str, str] | None = None) -> bytes:
            if image.size not in outputs:  # made once per size: a tinted photo, ComfyUI's compress level
                grey = Image.open(io.BytesIO(photo(*image.size, "PNG"))).convert("L")
                tinted = Image.merge(
                    "RGB", (grey, grey.point(lambda v: v * 85 // 100), grey.point(lambda v: v * 6 // 10))
                )
                buffer = io.BytesIO()
                tinted.save(buffer, "PNG", compress_level=4)
                outputs[image.size] = buffer.getvalue()
            return outputs[image.size]

        def header_only_load(ctx, node_id, image):  # the size is all the cached result needs
            picture = Image.open(io.BytesIO(ctx.read_input(image)))
            return nodes.NodeResult([picture, Image.new("L", (64, 64), 0)])

        nodes._png_bytes = cached_png
        nodes.RUNNERS["LoadImage"] = header_only_load
        nodes.RUNNERS["DDColor_Colorize"] = nodes.RUNNERS["D_DDColor"] = lambda ctx, node_id, image, **_: (
            nodes.NodeResult([image])
        )
        original_run = fake_executor.PromptRun.run
        intervals = self.intervals

        async def timed_run(run_self):
            began = time.perf_counter()
            try:
                return await original_run(run_self)
            finally:
                intervals.append((began, time.perf_counter()))

        fake_executor.PromptRun.run = timed_run
        self.fake = FakeComfyUI(delay_s=service_s)
        upload, view = self.fake.upload_image, self.fake.view

        async def slow_upload(request):
            await asyncio.sleep(self.rtt_s + (request.content_length or 0) / self.bytes_per_s)
            return await upload(request)

        async def slow_view(request):
            response = await view(request)
            await asyncio.sleep(self.rtt_s + len(response.body or b"") / self.bytes_per_s)
            return response

        self.fake.upload_image, self.fake.view = slow_upload, slow_view

    def duty(self, service_s: float) -> float:
        first = min(start for start, _ in self.intervals)
        last = max(end for _, end in self.intervals)
        return len(self.intervals) * service_s / (last - first)


async def yardstick(fake: FixedServiceFake, inputs: list[bytes]) -> None:
    from backend.workflows import Workflows

    mode = Workflows.load(ROOT / "workflows").get("person")
    async with DirectClient(fake.fake.url, lambda name, pid: mode.build(name, task_id=pid), mode.output_node) as client:
        for index, data in enumerate(inputs):
            await client.run(data, f"direct-{index}.jpg")


async def repairbot(fake: FixedServiceFake, inputs: list[bytes], url: str) -> None:
    from backend.services import Services
    from backend.settings import Settings

    settings = Settings(_env_file=None, redis_url=url, comfyui_url=fake.fake.url, queue_cap=10**6)
    services = Services.create(settings, comfyui=False)
    await services.redis.flushall()
    for index, data in enumerate(inputs):
        await services.intake.submit(data, mode="person", reply=CliReply(), user=f"cli:d{index}", exempt=True)
    worker = subprocess.Popen(
        [sys.executable, "-m", "backend.cli", "worker"],
        cwd=ROOT,
        env=child_env(url, COMFYUI_URL=fake.fake.url),
        stdout=subprocess.DEVNULL,
    )
    try:
        while await services.redis.xlen(settings.results_stream) < len(inputs):
            if worker.poll() is not None:
                raise RuntimeError("the worker exited")
            await asyncio.sleep(0.05)
        statuses = [f[b"status"] for _, f in await services.redis.xrange(settings.results_stream)]
        if statuses.count(b"ok") != len(inputs):
            raise RuntimeError(f"not every task succeeded: {statuses}")
    finally:
        worker.terminate()
        worker.wait(timeout=30)
        await services.close()


async def one_run(tasks: int, service_s: float, mbit: float, rtt_ms: float, url: str) -> dict[str, float]:
    fake = FixedServiceFake(service_s, mbit, rtt_ms)
    await fake.fake.start()
    try:
        inputs = [photo(*SIZES[index % len(SIZES)], seed=index) for index in range(tasks)]
        await yardstick(fake, inputs[:1])  # warm the caches (the output PNG per size)
        await yardstick(fake, inputs[1:2])
        fake.intervals.clear()
        await yardstick(fake, inputs)
        one_at_a_time = fake.duty(service_s)
        fake.intervals.clear()
        await repairbot(fake, inputs, url)
        return {"repairbot": fake.duty(service_s), "one_at_a_time": one_at_a_time}
    finally:
        await fake.fake.stop()


def main() -> None:
    parse = parser(__doc__.splitlines()[0])
    parse.add_argument("--tasks", type=int, default=40)
    parse.add_argument("--service", type=float, default=0.2, help="seconds per prompt")
    parse.add_argument("--mbit", type=float, default=1000, help="link to ComfyUI, Mbit/s")
    parse.add_argument("--rtt-ms", type=float, default=1.0)
    args = parse.parse_args()
    tasks, runs = (4, 1) if args.quick else (args.tasks, args.runs)
    results = []
    with private_redis() as url:
        for run in range(runs):
            results.append(asyncio.run(one_run(tasks, args.service, args.mbit, args.rtt_ms, url)))
            print(
                f"run {run + 1}/{runs}: repairbot {results[-1]['repairbot']:.1%}, "
                f"one at a time {results[-1]['one_at_a_time']:.1%}",
                flush=True,
            )
    figures = {key: summary([r[key] for r in results]) for key in ("repairbot", "one_at_a_time")}
    print_table(
        f"GPU duty cycle, {tasks} tasks (12 MP and 1280 px alternating), {args.service:g} s per prompt, "
        f"{args.mbit:g} Mbit/s + {args.rtt_ms:g} ms, median of {runs} (min–max)",
        ["worker", "duty cycle"],
        [
            ["repairbot worker (prefetch 2)", cell(figures["repairbot"], "{:.1%}")],
            ["one task at a time", cell(figures["one_at_a_time"], "{:.1%}")],
        ],
    )
    write_json(
        "gpu_duty",
        args.out,
        {"tasks": tasks, "service_s": args.service, "mbit": args.mbit, "rtt_ms": args.rtt_ms, "figures": figures},
    )


if __name__ == "__main__":
    main()
