"""The queue layer: a backlog of N tasks drained through worker (no-op executor) and notifier
(test sender), with 1 and 2 worker processes, beside a raw redis-py streams baseline and arq
(tuned), all in the same run against the same private redis-server.

repairbot: N tasks are queued through intake's own code path (8x8 JPEG), then the workers and the
notifier start; the drain rate counts deliveries from the first to the last. raw: XADD, then one
process turns task entries into result entries and another acknowledges them. arq: N no-op jobs,
then one burst-mode worker (poll_delay 0, max_jobs 1000, no results kept).

    python3 bench/queue.py --tasks 10000 --runs 3
"""

from __future__ import annotations

import sys

sys.path.append(sys.path.pop(0))  # bench/ last: its queue.py must not hide the standard library's queue

import asyncio
import subprocess
import tempfile
from pathlib import Path

from _common import ROOT, cell, child_env, parser, print_table, private_redis, summary, write_json
from _pipeline import QueueLayer, drain_rate, enqueue, flush


def repairbot(url: str, tasks: int, workers: int, tmp: Path) -> tuple[float, float]:
    """(drain tasks/s, enqueue tasks/s)."""
    flush(url)
    took, _ = asyncio.run(enqueue(url, tasks))
    with QueueLayer(url, workers, tasks, tmp) as layer:
        layer.start_notifier()
        layer.start_workers()
        report = layer.wait()
    return drain_rate(report, tasks), tasks / took


def _report_of(procs: list[subprocess.Popen[bytes]], report: Path, timeout: float = 600) -> dict:
    import json
    import time

    deadline = time.monotonic() + timeout
    while not report.exists():
        if time.monotonic() > deadline:
            raise TimeoutError("baseline did not finish")
        time.sleep(0.01)
    time.sleep(0.05)
    for proc in procs:
        proc.terminate()
        proc.wait(timeout=20)
    return json.loads(report.read_text())


def baseline(url: str, tasks: int, tmp: Path, script: str, fill: str, roles: tuple[str, ...]) -> float:
    """Drain rate of a baseline: `script fill` queues the tasks, then one process per role drains them."""
    flush(url)
    report = tmp / f"{Path(script).stem}.json"
    report.unlink(missing_ok=True)
    env = child_env(url, BENCH_EXPECT=tasks, BENCH_REPORT=report)
    path = str(ROOT / "bench" / script)
    subprocess.run([sys.executable, path, fill], env=env, check=True)
    procs = [subprocess.Popen([sys.executable, path, role], env=env) for role in roles]
    return drain_rate(_report_of(procs, report), tasks)


def raw(url: str, tasks: int, tmp: Path) -> float:
    return baseline(url, tasks, tmp, "_raw_streams.py", "producer", ("notifier", "worker"))


def arq_installed() -> bool:
    import importlib.util

    return importlib.util.find_spec("arq") is not None


def arq(url: str, tasks: int, tmp: Path) -> float:
    return baseline(url, tasks, tmp, "_arq_bench.py", "enqueue", ("worker",))


def main() -> None:
    parse = parser(__doc__.splitlines()[0])
    parse.add_argument("--tasks", type=int, default=10000)
    args = parse.parse_args()
    tasks, runs = (200, 1) if args.quick else (args.tasks, args.runs)
    figures: dict[str, list[float]] = {"repairbot_1": [], "repairbot_2": [], "raw": [], "arq": [], "intake_enqueue": []}
    with private_redis() as url, tempfile.TemporaryDirectory() as tmp:
        for run in range(runs):
            print(f"run {run + 1}/{runs}", flush=True)
            one, enqueue_rate = repairbot(url, tasks, 1, Path(tmp))
            figures["repairbot_1"].append(one)
            figures["intake_enqueue"].append(enqueue_rate)
            figures["repairbot_2"].append(repairbot(url, tasks, 2, Path(tmp))[0])
            figures["raw"].append(raw(url, tasks, Path(tmp)))
            if arq_installed():
                figures["arq"].append(arq(url, tasks, Path(tmp)))
    stats = {name: summary(values) for name, values in figures.items() if values}
    ratios = {"vs_raw_1_worker": summary([a / b for a, b in zip(figures["repairbot_1"], figures["raw"])])}
    rows = [
        ["repairbot, 1 worker + notifier", cell(stats["repairbot_1"])],
        ["repairbot, 2 workers + notifier", cell(stats["repairbot_2"])],
        ["raw redis-py streams", cell(stats["raw"])],
    ]
    if figures["arq"]:
        ratios["vs_arq_1_worker"] = summary([a / b for a, b in zip(figures["repairbot_1"], figures["arq"])])
        rows += [
            ["arq (tuned), 1 worker", cell(stats["arq"])],
            ["repairbot 1 worker / arq", cell(ratios["vs_arq_1_worker"], "{:.2f}x")],
        ]
    else:
        rows.append(["arq (tuned)", "not installed: pip install -e '.[bench]'"])
    rows += [
        ["repairbot 1 worker / raw", cell(ratios["vs_raw_1_worker"], "{:.0%}")],
        ["(intake enqueue, 1 process)", cell(stats["intake_enqueue"])],
    ]
    print_table(f"Queue layer, {tasks} tasks, median of {runs} (min–max), tasks/s", ["system", "drain/s"], rows)
    write_json("queue", args.out, {"tasks": tasks, "figures": stats, "ratios": ratios})


if __name__ == "__main__":
    main()
