"""`repairbot status` with 1,000 and with 1,000,000 tasks waiting, and how fast the CLI starts.

The tasks stream is filled with minimal entries straight away (what status reads does not depend on
their contents), the workers' group created at 0. Reported per size: the wall time of the whole
command (process start included), the time Admin.status() takes in process, and the microseconds
Redis spent on it (INFO commandstats). Then the start-up of `status` and `submit`: the command's
wall time beside a bare `python3 -c pass`, and the import time of the modules it loads
(`python3 -X importtime`). repairbot's own modules are byte-compiled first, as any run leaves them
(unless PYTHONDONTWRITEBYTECODE is set, as it is on some CI machines: then every start compiled
~60 modules from source, ~25 ms of each start-up, which no installed copy pays).

    python3 bench/status.py --runs 3
"""

from __future__ import annotations

import sys

sys.path.append(sys.path.pop(0))  # bench/ last: its queue.py must not hide the standard library's queue

import asyncio  # noqa: E402
import compileall  # noqa: E402
import re  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

from _common import ROOT, cell, child_env, parser, photo, print_table, private_redis, summary, write_json  # noqa: E402

BATCH = 10_000


def fill(url: str, waiting: int, settings) -> None:
    import redis

    client = redis.Redis.from_url(url)
    client.flushall()
    client.xgroup_create(settings.tasks_stream, settings.workers_group, id="0", mkstream=True)
    for start in range(0, waiting, BATCH):
        with client.pipeline(transaction=False) as pipe:
            for _ in range(min(BATCH, waiting - start)):
                pipe.xadd(settings.tasks_stream, {"v": "1"})
            pipe.execute()
    client.close()


def redis_usec(url: str) -> float:
    import redis

    client = redis.Redis.from_url(url)
    stats = client.info("commandstats")
    client.close()
    return sum(float(v["usec"]) for k, v in stats.items() if k != "cmdstat_info")


def wall(command: list[str], env: dict[str, str]) -> float:
    began = time.perf_counter()
    subprocess.run(command, cwd=ROOT, env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - began


def import_ms(command: list[str], env: dict[str, str]) -> float:
    """Cumulative import time of the top-level imports, from -X importtime."""
    run = subprocess.run(
        [sys.executable, "-X", "importtime", *command], cwd=ROOT, env=env, capture_output=True, text=True
    )
    total = 0
    for line in run.stderr.splitlines():
        match = re.match(r"import time:\s+\d+ \|\s+(\d+) \| (\S.*)$", line)
        if match and not match.group(2).startswith(" "):
            total += int(match.group(1))
    return total / 1000


async def in_process(url: str) -> float:
    from backend.services import Services
    from backend.settings import Settings

    async with Services.open(Settings(_env_file=None, redis_url=url, comfyui_url="http://127.0.0.1:9")) as services:
        await services.admin.status()
        began = time.perf_counter()
        await services.admin.status()
        return time.perf_counter() - began


def main() -> None:
    from backend.settings import Settings

    args = parser(__doc__.splitlines()[0]).parse_args()
    sizes, runs = ([1_000, 20_000], 1) if args.quick else ([1_000, 1_000_000], args.runs)
    rows, figures = [], {}
    compileall.compile_dir(ROOT / "backend", quiet=1)
    with private_redis() as url, tempfile.TemporaryDirectory() as tmp:
        env = child_env(url, COMFYUI_URL="http://127.0.0.1:9", QUEUE_CAP=10**8)  # no ComfyUI there: reported down
        status = [sys.executable, "-m", "backend.cli", "status"]
        for waiting in sizes:
            fill(url, waiting, Settings(_env_file=None))
            walls, inside, usecs = [], [], []
            for _ in range(runs):
                before = redis_usec(url)
                walls.append(wall(status, env) * 1000)
                usecs.append(redis_usec(url) - before)
                inside.append(asyncio.run(in_process(url)) * 1000)
            figures[waiting] = {
                "wall_ms": summary(walls),
                "in_process_ms": summary(inside),
                "redis_usec": summary(usecs),
            }
            row = figures[waiting]
            rows.append(
                [f"{waiting:,}", cell(row["wall_ms"]), cell(row["in_process_ms"], "{:.1f}"), cell(row["redis_usec"])]
            )
        image = Path(tmp) / "photo.jpg"
        image.write_bytes(photo(64, 64))
        submit = [sys.executable, "-m", "backend.cli", "submit", str(image), "--mode", "preview"]
        bare = summary([wall([sys.executable, "-c", "pass"], env) * 1000 for _ in range(max(3, runs))])
        startup = {
            "status": {
                "wall_ms": summary([wall(status, env) * 1000 for _ in range(max(3, runs))]),
                "imports_ms": summary([import_ms(status[1:], env) for _ in range(max(3, runs))]),
            },
            "submit": {
                "wall_ms": summary([wall(submit, env) * 1000 for _ in range(max(3, runs))]),
                "imports_ms": summary([import_ms(submit[1:], env) for _ in range(max(3, runs))]),
            },
        }
    print_table(
        f"repairbot status by tasks waiting, median of {runs} (min–max)",
        ["waiting", "command wall ms", "Admin.status() ms", "Redis µs"],
        rows,
    )
    print_table(
        "CLI start-up, ms",
        ["command", "wall", "imports", "python3 -c pass"],
        [[name, cell(v["wall_ms"]), cell(v["imports_ms"]), cell(bare)] for name, v in startup.items()],
    )
    write_json(
        "status",
        args.out,
        {"by_waiting": {str(k): v for k, v in figures.items()}, "startup": startup, "bare_python_ms": bare},
    )


if __name__ == "__main__":
    main()
