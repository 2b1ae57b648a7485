"""repairbot in a peer harness's row: N tasks through intake, WORKERS worker processes, one notifier.

Reads REDIS_URL (default: a private redis-server started here), N (default 10000) and WORKERS (1 or
2) from the environment. The workers run the no-op executor, the notifier a test sender; both are
running before the first task is enqueued. Prints one line and exits 0 once all N are delivered:

    RESULT {"enqueue_per_s": ..., "drain_per_s": ..., "delivered": N}

enqueue_per_s: N over the time intake took to queue them all; drain_per_s: deliveries per second
from the first delivered result to the last.
"""

from __future__ import annotations

import sys

sys.path.append(sys.path.pop(0))  # bench/ last: its queue.py must not hide the standard library's queue

import asyncio
import contextlib
import json
import os
import tempfile
import time
from pathlib import Path

from _common import private_redis  # noqa: E402
from _pipeline import QueueLayer, drain_rate, enqueue, flush  # noqa: E402


def main() -> int:
    count = int(os.environ.get("N", 10000))
    workers = int(os.environ.get("WORKERS", 1))
    if workers not in (1, 2):
        print("WORKERS must be 1 or 2", file=sys.stderr)
        return 2
    with contextlib.ExitStack() as stack:
        url = os.environ.get("REDIS_URL") or stack.enter_context(private_redis())
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="repairbot-peer-")))
        flush(url)
        layer = stack.enter_context(QueueLayer(url, workers, count, tmp))
        layer.start_workers()
        layer.start_notifier()
        time.sleep(1.5)  # let the processes import and join their groups
        took, _ = asyncio.run(enqueue(url, count))
        report = layer.wait()
    print(
        "RESULT "
        + json.dumps(
            {
                "enqueue_per_s": round(count / took, 1),
                "drain_per_s": round(drain_rate(report, count), 1),
                "delivered": report["count"],
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
