"""The raw redis-py streams baseline: the least a stream queue can do for the same trip.

`producer`: XADD N task entries, pipelined. `worker`: XREADGROUP batches, then one pipeline per
batch with a result XADD per entry and one XACK. `notifier`: XREADGROUP result batches, XACK, and
write the report (first and last delivery time) once N are seen. No validation, no bookkeeping.
"""

from __future__ import annotations

import sys

sys.path.append(sys.path.pop(0))  # bench/ last: its queue.py must not hide the standard library's queue

import json
import os
import time
from pathlib import Path

import redis

TASKS, RESULTS = "raw_tasks", "raw_results"
BATCH = 500


def group(client: redis.Redis, stream: str, name: str) -> None:
    try:
        client.xgroup_create(stream, name, id="0", mkstream=True)
    except redis.ResponseError:
        pass


def produce(client: redis.Redis, count: int) -> None:
    for start in range(0, count, BATCH):
        with client.pipeline(transaction=False) as pipe:
            for index in range(start, min(count, start + BATCH)):
                pipe.xadd(TASKS, {"task_id": f"{index:032x}", "payload": "blob:in:" + "0" * 32})
            pipe.execute()


def work(client: redis.Redis) -> None:
    group(client, TASKS, "workers")
    while True:
        reply = client.xreadgroup("workers", "w", {TASKS: ">"}, count=BATCH, block=1000)
        for _, entries in reply or []:
            with client.pipeline(transaction=False) as pipe:
                for _, fields in entries:
                    pipe.xadd(RESULTS, {"task_id": fields[b"task_id"], "status": "ok"})
                pipe.xack(TASKS, "workers", *[entry_id for entry_id, _ in entries])
                pipe.execute()


def notify(client: redis.Redis, expect: int, report: Path) -> None:
    group(client, RESULTS, "notifiers")
    count, first, last = 0, 0.0, 0.0
    while count < expect:
        reply = client.xreadgroup("notifiers", "n", {RESULTS: ">"}, count=BATCH, block=1000)
        for _, entries in reply or []:
            now = time.time()
            first = first or now
            last = now
            count += len(entries)
            client.xack(RESULTS, "notifiers", *[entry_id for entry_id, _ in entries])
    report.write_text(json.dumps({"count": count, "first": first, "last": last}))


if __name__ == "__main__":
    role = sys.argv[1]
    client = redis.Redis.from_url(os.environ["REDIS_URL"])
    group(client, TASKS, "workers")
    group(client, RESULTS, "notifiers")
    if role == "producer":
        produce(client, int(os.environ["BENCH_EXPECT"]))
    elif role == "worker":
        work(client)
    else:
        notify(client, int(os.environ["BENCH_EXPECT"]), Path(os.environ["BENCH_REPORT"]))
