"""Latency through the queue layer at a steady rate: 200 tasks/s for 10 s through the no-op executor.

Tasks are submitted through intake at a fixed pace while a worker process (EXECUTOR=noop) and a
notifier process (counting test sender) run; each task's latency is submit → delivered by the
notifier (the sender's clock; same machine), and submit → the worker's result (its finished_at, to the
millisecond). Reports p50, p95, p99 and the worst.

    python3 bench/latency.py --rate 200 --seconds 10 --runs 3
"""

from __future__ import annotations

import sys

sys.path.append(sys.path.pop(0))  # bench/ last: its queue.py must not hide the standard library's queue

import asyncio  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

from _common import cell, parser, print_table, private_redis, summary, write_json  # noqa: E402
from _pipeline import QueueLayer, enqueue, flush  # noqa: E402


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(p / 100 * len(ordered)) - 1))]


def one_run(url: str, rate: float, seconds: float, tmp: Path) -> dict[str, float]:
    flush(url)
    count = int(rate * seconds)
    with QueueLayer(url, 1, count, tmp, READ_BATCH=16) as layer:
        layer.start_workers()
        layer.start_notifier()
        time.sleep(2.0)  # imports done, groups joined
        _, submitted = asyncio.run(enqueue(url, count, rate=rate, concurrency=64))
        report = layer.wait()
    latencies = [(report["times"][task_id] - began) * 1000 for task_id, began in submitted.items()]
    to_result = [(report["finished"][task_id] - began) * 1000 for task_id, began in submitted.items()]
    return {
        "p50": percentile(latencies, 50),
        "p95": percentile(latencies, 95),
        "p99": percentile(latencies, 99),
        "max": max(latencies),
        "result_p50": percentile(to_result, 50),
        "result_p99": percentile(to_result, 99),
        "tasks": count,
    }


def main() -> None:
    parse = parser(__doc__.splitlines()[0])
    parse.add_argument("--rate", type=float, default=200)
    parse.add_argument("--seconds", type=float, default=10)
    args = parse.parse_args()
    rate, seconds, runs = (50, 1, 1) if args.quick else (args.rate, args.seconds, args.runs)
    results = []
    with private_redis() as url, tempfile.TemporaryDirectory() as tmp:
        for run in range(runs):
            results.append(one_run(url, rate, seconds, Path(tmp)))
            print(f"run {run + 1}/{runs}: p50 {results[-1]['p50']:.1f} ms, p99 {results[-1]['p99']:.1f} ms", flush=True)
    keys = ("p50", "p95", "p99", "max", "result_p50", "result_p99")
    figures = {key: summary([r[key] for r in results]) for key in keys}
    print_table(
        f"Latency at {rate:g} tasks/s for {seconds:g} s, no-op executor, median of {runs} (min–max), ms",
        ["", "p50", "p95", "p99", "max"],
        [
            ["submit → delivered by the notifier", *[cell(figures[k], "{:.1f}") for k in keys[:4]]],
            [
                "submit → result made by the worker (±1 ms)",
                cell(figures["result_p50"], "{:.1f}"),
                "",
                cell(figures["result_p99"], "{:.1f}"),
                "",
            ],
        ],
    )
    write_json("latency", args.out, {"rate": rate, "seconds": seconds, "figures": figures})


if __name__ == "__main__":
    main()
