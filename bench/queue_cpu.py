"""Where the queue layer's CPU goes: CPU per task of each process while a backlog drains, for
repairbot (1 worker, notifier, Redis) and for the raw redis-py streams baseline (its worker, its
notifier, Redis), in the same run against the same private redis-server.

The drain is CPU bound on a small machine, so the sum per task says how fast it can go there: two
cores carry at most 2 / (sum) tasks a second. CPU is read from /proc (user + system) once every
process is up and again when the last result is delivered; Redis's pid comes from INFO server.

    python3 bench/queue_cpu.py --tasks 20000 --runs 3
"""

from __future__ import annotations

import sys

sys.path.append(sys.path.pop(0))  # bench/ last: its queue.py must not hide the standard library's queue

import asyncio  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable  # noqa: E402
from pathlib import Path  # noqa: E402

from _common import ROOT, cell, child_env, parser, print_table, private_redis, summary, write_json  # noqa: E402
from _pipeline import QueueLayer, drain_rate, enqueue, flush  # noqa: E402

TICKS = os.sysconf("SC_CLK_TCK")
SETTLE_S = 0.5  # the processes' own start-up is not the drain's


def cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def redis_pid(url: str) -> int:
    import redis

    client = redis.Redis.from_url(url)
    try:
        return int(client.info("server")["process_id"])
    finally:
        client.close()


def per_task_us(pids: dict[str, int], tasks: int, wait: Callable[[], dict]) -> tuple[dict[str, float], dict]:
    before = {name: cpu_s(pid) for name, pid in pids.items()}
    report = wait()
    after = {name: cpu_s(pid) for name, pid in pids.items()}
    return {name: (after[name] - before[name]) * 1e6 / tasks for name in pids}, report


def repairbot(url: str, tasks: int, tmp: Path) -> tuple[dict[str, float], float]:
    flush(url)
    asyncio.run(enqueue(url, tasks))
    with QueueLayer(url, 1, tasks, tmp) as layer:
        layer.start_notifier()
        layer.start_workers()
        time.sleep(SETTLE_S)
        pids = {"worker": layer.procs[1].pid, "notifier": layer.procs[0].pid, "redis": redis_pid(url)}
        usage, report = per_task_us(pids, tasks, layer.wait)
    return usage, drain_rate(report, tasks)


def raw(url: str, tasks: int, tmp: Path) -> tuple[dict[str, float], float]:
    flush(url)
    report_path = tmp / "raw-cpu.json"
    report_path.unlink(missing_ok=True)
    env = child_env(url, BENCH_EXPECT=tasks, BENCH_REPORT=report_path)
    script = str(ROOT / "bench" / "_raw_streams.py")
    subprocess.run([sys.executable, script, "producer"], env=env, check=True)
    procs = {role: subprocess.Popen([sys.executable, script, role], env=env) for role in ("worker", "notifier")}
    try:
        pids = {role: proc.pid for role, proc in procs.items()} | {"redis": redis_pid(url)}

        def wait() -> dict:
            while not report_path.exists():
                time.sleep(0.005)
            time.sleep(0.05)
            return json.loads(report_path.read_text())

        usage, report = per_task_us(pids, tasks, wait)
    finally:
        for proc in procs.values():
            proc.terminate()
            proc.wait(timeout=20)
    return usage, drain_rate(report, tasks)


def main() -> None:
    parse = parser(__doc__.splitlines()[0])
    parse.add_argument("--tasks", type=int, default=20000)
    args = parse.parse_args()
    tasks, runs = (300, 1) if args.quick else (args.tasks, args.runs)
    raw_tasks = tasks * 5  # the baseline drains in a fraction of the time: more tasks, same resolution
    samples: dict[str, dict[str, list[float]]] = {"repairbot": {}, "raw": {}}
    with private_redis() as url, tempfile.TemporaryDirectory() as tmp:
        for run in range(runs):
            print(f"run {run + 1}/{runs}", flush=True)
            for system, measure, count in (("repairbot", repairbot, tasks), ("raw", raw, raw_tasks)):
                usage, rate = measure(url, count, Path(tmp))
                for name, value in {**usage, "total": sum(usage.values()), "drain_per_s": rate}.items():
                    samples[system].setdefault(name, []).append(value)
    figures = {system: {name: summary(values) for name, values in parts.items()} for system, parts in samples.items()}
    names = ["worker", "notifier", "redis", "total"]
    rows = [
        [system, *(cell(figures[system][n], "{:.1f}") for n in names), cell(figures[system]["drain_per_s"])]
        for system in figures
    ]
    print_table(
        f"Queue layer CPU per task (µs, user + system), median of {runs} (min–max)",
        ["system", "worker", "notifier", "redis", "total", "drain/s"],
        rows,
    )
    write_json("queue_cpu", args.out, {"tasks": tasks, "figures": figures})


if __name__ == "__main__":
    main()
