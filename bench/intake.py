"""Intake throughput by photo size: Intake.submit in one process (validation, blob, task entry).

Photos are synthetic grey JPEGs (and one PNG) of the sizes people send: 512 px, Telegram's 1280 px,
2000x1500 and a 12 MP document. Submissions run 16 at a time against a private redis-server; the
stored blob's size is compared with the original's, and the image step alone (prepare_input) is
timed beside the old path (a full decode and RGB PNG re-encode), in the same run.

    python3 bench/intake.py --runs 3
"""

from __future__ import annotations

import sys

sys.path.append(sys.path.pop(0))  # bench/ last: its queue.py must not hide the standard library's queue

import asyncio  # noqa: E402
import time  # noqa: E402

from _common import cell, parser, photo, print_table, private_redis, summary, write_json  # noqa: E402

from backend.replies import LoopbackReply  # noqa: E402

SIZES = [
    ("512x512 JPEG", 512, 512, "JPEG", 1000),
    ("1280x960 JPEG", 1280, 960, "JPEG", 300),
    ("2000x1500 JPEG", 2000, 1500, "JPEG", 120),
    ("4000x3000 JPEG (12 MP)", 4000, 3000, "JPEG", 30),
    ("512x512 PNG", 512, 512, "PNG", 500),
]
CONCURRENCY = 16


async def submit_all(url: str, data: bytes, count: int) -> tuple[float, int]:
    """(photos/s, stored blob bytes)."""
    from backend.services import Services
    from backend.settings import Settings

    settings = Settings(_env_file=None, redis_url=url, queue_cap=10**7)
    services = Services.create(settings, comfyui=False)
    await services.redis.flushall()
    gate = asyncio.Semaphore(CONCURRENCY)
    inputs: list[str] = []

    async def one(index: int) -> None:
        async with gate:
            await services.intake.submit(data, mode="preview", reply=LoopbackReply(), user=f"test:{index}", exempt=True)

    began = time.perf_counter()
    await asyncio.gather(*(one(index) for index in range(count)))
    rate = count / (time.perf_counter() - began)
    [(_, fields)] = await services.redis.xrange(settings.tasks_stream, count=1)
    inputs.append(fields[b"input"].decode())
    stored = len(await services.blobs.get(inputs[0]))
    await services.close()
    return rate, stored


def image_step(data: bytes, count: int) -> tuple[float, float]:
    """(prepare_input per s, old full-decode-and-PNG path per s)."""
    from backend import images

    limits = {"max_bytes": 50 * 1024 * 1024, "max_pixels": 40_000_000}
    began = time.perf_counter()
    for _ in range(count):
        images.prepare_input(data, **limits)
    now = count / (time.perf_counter() - began)
    began = time.perf_counter()
    for _ in range(max(1, count // 4)):
        with images._open_checked(data, **limits) as image:  # what intake did before: decode, re-encode
            images._encode_png(images._decode_to_rgb(image, max_pixels=limits["max_pixels"]))
    old = max(1, count // 4) / (time.perf_counter() - began)
    return now, old


def main() -> None:
    args = parser(__doc__.splitlines()[0]).parse_args()
    runs = 1 if args.quick else args.runs
    rows, results = [], {}
    with private_redis() as url:
        for name, width, height, fmt, count in SIZES:
            count = max(3, count // 50) if args.quick else count
            data = photo(width, height, fmt)
            rates, steps, olds, stored = [], [], [], 0
            for _ in range(runs):
                rate, stored = asyncio.run(submit_all(url, data, count))
                rates.append(rate)
                step, old = image_step(data, max(3, count // 4))
                steps.append(step)
                olds.append(old)
            figures = {
                "intake_per_s": summary(rates),
                "image_step_per_s": summary(steps),
                "old_image_step_per_s": summary(olds),
                "original_bytes": len(data),
                "stored_bytes": stored,
            }
            results[name] = figures
            rows.append(
                [
                    name,
                    cell(figures["intake_per_s"]),
                    cell(figures["image_step_per_s"]),
                    cell(figures["old_image_step_per_s"]),
                    f"{stored / len(data):.2f}x",
                ]
            )
            print(f"  {name}: {rows[-1][1]} photos/s", flush=True)
    print_table(
        f"Intake, one process, {CONCURRENCY} in flight, median of {runs} (min–max)",
        ["photo", "submits/s", "image step/s", "old image step/s", "stored/original"],
        rows,
    )
    write_json("intake", args.out, {"concurrency": CONCURRENCY, "sizes": results})


if __name__ == "__main__":
    main()
