"""The README's Performance table, from the JSON the benchmarks wrote into bench/results/.

python3 bench/report.py
"""

from __future__ import annotations

import sys

sys.path.append(sys.path.pop(0))  # bench/ last: its queue.py must not hide the standard library's queue

import json  # noqa: E402

from _common import RESULTS, cell  # noqa: E402


def load(name: str) -> dict:
    path = RESULTS / f"{name}.json"
    return json.loads(path.read_text()) if path.exists() else {}


def main() -> None:
    rows: list[tuple[str, str, str]] = []
    cpu = load("worker_cpu").get("figures", {})
    for name, target in (("512x512 JPEG", "≤ 3 ms"), ("4000x3000 JPEG (12 MP)", "≤ 15 ms")):
        if name in cpu:
            rows.append((f"worker CPU per task, {name}", cell(cpu[name], "{:.1f} ms"), target))
    queue = load("queue")
    if queue:
        figures, ratios = queue["figures"], queue["ratios"]
        rows.append(("queue layer, 1 worker + notifier (tasks/s)", cell(figures["repairbot_1"]), ""))
        rows.append(("queue layer, 2 workers + notifier (tasks/s)", cell(figures["repairbot_2"]), ""))
        if "arq" in figures:
            rows.append(("arq tuned, same run (tasks/s)", cell(figures["arq"]), ""))
            rows.append(("repairbot 1 worker / arq", cell(ratios["vs_arq_1_worker"], "{:.2f}x"), "≥ 3x"))
        rows.append(("raw redis-py streams, same run (tasks/s)", cell(figures["raw"]), ""))
        rows.append(("repairbot 1 worker / raw streams", cell(ratios["vs_raw_1_worker"], "{:.1%}"), "≥ 30%"))
    latency = load("latency")
    if latency:
        f = latency["figures"]
        rows.append(
            (
                f"latency at {latency['rate']:g}/s, submit → delivered p50 / p99",
                f"{cell(f['p50'], '{:.1f}')} / {cell(f['p99'], '{:.1f}')} ms",
                "p50 ≤ 3, p99 ≤ 15 ms",
            )
        )
        rows.append(
            (
                f"latency at {latency['rate']:g}/s, submit → worker result p50 / p99",
                f"{cell(f['result_p50'], '{:.0f}')} / {cell(f['result_p99'], '{:.0f}')} ms",
                "",
            )
        )
    intake = load("intake").get("sizes", {})
    for name, figures in intake.items():
        stored = figures["stored_bytes"] / figures["original_bytes"]
        target = "≥ 500/s" if name == "512x512 JPEG" else ""
        rows.append(
            (f"intake, {name} (photos/s; stored/original {stored:.2f}x)", cell(figures["intake_per_s"]), target)
        )
    duty = load("gpu_duty")
    if duty:
        rows.append(
            (
                f"GPU duty cycle, {duty['service_s']:g} s/prompt, 12 MP + 1280 px",
                cell(duty["figures"]["repairbot"], "{:.1%}"),
                "≥ 98%",
            )
        )
        rows.append(
            ("GPU duty cycle, one task at a time (yardstick)", cell(duty["figures"]["one_at_a_time"], "{:.1%}"), "")
        )
    e2e = load("comfy_e2e")
    if e2e:
        rows.append(
            ("through the zero-delay fake, repairbot / direct client", cell(e2e["figures"]["ratio"], "{:.0%}"), "≥ 80%")
        )
    memory = load("memory").get("figures", {})
    if memory:
        rows.append(("Redis per queued task, outside the blob", cell(memory["per_task_bytes"], "{:,.0f} B"), ""))
        rows.append(
            ("Redis per blob, over the photo's own bytes", cell(memory["blob_overhead_bytes"], "{:,.0f} B"), "")
        )
        rows.append(
            (
                "worker RSS with 10,000 waiting (peak while draining)",
                cell(memory["worker_peak_rss_mib"], "{:.0f} MiB"),
                "",
            )
        )
    status = load("status")
    if status:
        by = status["by_waiting"]
        for waiting, figures in by.items():
            rows.append(
                (
                    f"`repairbot status` at {int(waiting):,} waiting: wall / in Redis",
                    f"{cell(figures['wall_ms'])} ms / {cell(figures['redis_usec'])} µs",
                    "flat",
                )
            )
        for command, figures in status["startup"].items():
            rows.append(
                (
                    f"`repairbot {command}` start-up: wall / imports",
                    f"{cell(figures['wall_ms'])} / {cell(figures['imports_ms'])} ms",
                    "≤ 150 ms",
                )
            )
    trips = load("roundtrips").get("figures", {})
    if trips:
        rows.append(
            (
                "Redis per task, worker (no-op): commands / round trips",
                f"{cell(trips['worker_commands'], '{:.1f}')} / {cell(trips['worker_trips'], '{:.2f}')}",
                "",
            )
        )
        rows.append(
            (
                "Redis per submit, intake: commands / round trips",
                f"{cell(trips['intake_commands'], '{:.1f}')} / {cell(trips['intake_trips'], '{:.1f}')}",
                "",
            )
        )
    print("| figure | median of 3 (min–max) | target |\n|---|---|---|")
    for figure, value, target in rows:
        print(f"| {figure} | {value} | {target} |")


if __name__ == "__main__":
    main()
