"""A notifier process for benchmarks: the real Notifier with a test sender that only counts.

Environment: REDIS_URL, BENCH_EXPECT (results to wait for), BENCH_REPORT (a JSON file written once
that many are delivered: count, first and last delivery time), BENCH_CONCURRENCY (sends in flight).
"""

from __future__ import annotations

import sys

sys.path.append(sys.path.pop(0))  # bench/ last: its queue.py must not hide the standard library's queue

import asyncio
import json
import os
import signal
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from backend.processes import build_notifier  # noqa: E402
from backend.redis_conn import connect  # noqa: E402
from backend.settings import Settings  # noqa: E402


class CountingSender:
    """Platform `test`: a send is a timestamp; the report is written when the last one arrives."""

    def __init__(self, expect: int, report: Path):
        self.expect, self.report = expect, report
        self.count, self.first, self.last = 0, 0.0, 0.0
        self.times: dict[str, float] = {}
        self.finished: dict[str, float] = {}  # when the worker made each result (ms resolution)

    async def start(self) -> None:
        pass

    async def close(self) -> None:
        pass

    async def send_event(self, event) -> None:
        pass

    async def send_result(self, result) -> None:
        now = time.time()
        if result.task_id in self.times:
            return  # sent twice (a redelivery): the user's first copy is the one that counts
        self.first = self.first or now
        self.last = now
        self.times[result.task_id] = now
        self.finished[result.task_id] = result.finished_at / 1000
        self.count = len(self.times)
        if self.count == self.expect:
            partial = self.report.with_suffix(".part")
            partial.write_text(
                json.dumps(
                    {
                        "count": self.count,
                        "first": self.first,
                        "last": self.last,
                        "times": self.times,
                        "finished": self.finished,
                    }
                )
            )
            partial.rename(self.report)


async def main() -> None:
    settings = Settings()
    redis = connect(settings)
    sender = CountingSender(int(os.environ["BENCH_EXPECT"]), Path(os.environ["BENCH_REPORT"]))
    notifier = build_notifier(
        settings, redis, {"test": sender}, concurrency=int(os.environ.get("BENCH_CONCURRENCY", 256))
    )
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, notifier.stop)
    await notifier.run()
    await redis.aclose()


if __name__ == "__main__":
    asyncio.run(main())
