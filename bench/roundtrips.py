"""Redis commands and round trips per task: intake's submit, and the worker with the no-op executor.

Commands come from the server (INFO commandstats before and after, MULTI and EXEC included);
round trips are counted in the client (each packet redis-py sends is one: a pipeline is one).
Everything runs in this process against a private redis-server.

    python3 bench/roundtrips.py --tasks 500
"""

from __future__ import annotations

import sys

sys.path.append(sys.path.pop(0))  # bench/ last: its queue.py must not hide the standard library's queue

import asyncio
import time
from typing import Any

from _common import cell, parser, photo, print_table, private_redis, summary, write_json
from redis.asyncio.connection import AbstractConnection

from backend.replies import CliReply

SENT = {"packets": 0}
_original_send = AbstractConnection.send_packed_command


async def _counting_send(self: Any, command: Any, check_health: bool = True) -> None:
    SENT["packets"] += 1
    await _original_send(self, command, check_health)


AbstractConnection.send_packed_command = _counting_send  # type: ignore[method-assign]


async def commands(redis: Any) -> dict[str, int]:
    stats = await redis.info("commandstats")
    return {name.removeprefix("cmdstat_"): int(value["calls"]) for name, value in stats.items()}


def delta(before: dict[str, int], after: dict[str, int]) -> dict[str, int]:
    changed = {name: after[name] - before.get(name, 0) for name in after}
    changed.pop("info", None)
    return {name: count for name, count in sorted(changed.items()) if count}


async def one_run(url: str, tasks: int) -> dict[str, Any]:
    from backend.processes import build_worker
    from backend.services import Services
    from backend.settings import Settings

    settings = Settings(_env_file=None, redis_url=url, executor="noop", queue_cap=tasks * 2, block_ms=100)
    services = Services.create(settings)
    await services.redis.flushall()
    await services.redis.xgroup_create(settings.tasks_stream, settings.workers_group, id="0", mkstream=True)
    image = photo(8, 8)
    before, packets = await commands(services.redis), SENT["packets"]
    for index in range(tasks):
        await services.intake.submit(image, mode="preview", reply=CliReply(), user=f"cli:u{index}", exempt=True)
    intake_cmds = delta(before, await commands(services.redis))
    intake_trips = SENT["packets"] - packets - 1  # the INFO above

    worker = build_worker(settings, services.redis, blobs=services.blobs, workflows=services.workflows)
    before, packets = await commands(services.redis), SENT["packets"]
    runner = asyncio.create_task(worker.run())
    while await services.redis.xlen(settings.results_stream) < tasks:
        await asyncio.sleep(0.01)
    polls_packets = SENT["packets"]
    worker.stop()
    await runner
    worker_cmds = delta(before, await commands(services.redis))
    worker_cmds["xlen"] = worker_cmds.get("xlen", 0)  # our own polling, not the worker's
    worker_trips = SENT["packets"] - packets
    polls = worker_cmds.pop("xlen")
    worker_trips -= polls + 1
    await services.close()
    del polls_packets
    return {
        "intake_commands": sum(intake_cmds.values()) / tasks,
        "intake_trips": intake_trips / tasks,
        "worker_commands": sum(worker_cmds.values()) / tasks,
        "worker_trips": worker_trips / tasks,
        "intake_by_command": {k: v / tasks for k, v in intake_cmds.items()},
        "worker_by_command": {k: v / tasks for k, v in worker_cmds.items()},
    }


def main() -> None:
    parse = parser(__doc__.splitlines()[0], runs=1)
    parse.add_argument("--tasks", type=int, default=500)
    args = parse.parse_args()
    tasks = 20 if args.quick else args.tasks
    runs = []
    with private_redis() as url:
        for _ in range(1 if args.quick else args.runs):
            runs.append(asyncio.run(one_run(url, tasks)))
    figures = {
        key: summary([run[key] for run in runs])
        for key in ("intake_commands", "intake_trips", "worker_commands", "worker_trips")
    }
    print_table(
        f"Redis per task ({tasks} tasks, no-op executor)",
        ["", "commands", "round trips"],
        [
            ["intake submit", cell(figures["intake_commands"], "{:.1f}"), cell(figures["intake_trips"], "{:.1f}")],
            ["worker", cell(figures["worker_commands"], "{:.1f}"), cell(figures["worker_trips"], "{:.1f}")],
        ],
    )
    print("\nintake:", ", ".join(f"{k} {v:.2f}" for k, v in runs[-1]["intake_by_command"].items()))
    print("worker:", ", ".join(f"{k} {v:.2f}" for k, v in runs[-1]["worker_by_command"].items()))
    write_json(
        "roundtrips", args.out, {"tasks": tasks, "figures": figures, "last_run": runs[-1], "finished": time.time()}
    )


if __name__ == "__main__":
    main()
