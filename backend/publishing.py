"""The worker's results, written in groups (backend.batching): one MULTI/EXEC per batch of finished
tasks, XACK inside.

A finished task needs its result entry, the stored copy, its bookkeeping and the XACK of its task
entry. Written one task at a time that is two round trips each; here every task that finishes while
a write is in flight joins the next one, so under load a single round trip carries many results,
and an idle worker still writes each result at once (nothing waits for a batch to fill).

Everything for a task is in the same transaction as its XACK: a worker that dies before EXEC leaves
the task pending (redelivered, and the stored result, if any, is re-published), never acknowledged
without a result.
"""

from __future__ import annotations

from dataclasses import dataclass

from redis.asyncio import Redis

from backend import keys
from backend.batching import GroupCommit
from backend.streams import is_nogroup
from backend.task_handle import TaskState
from backend.tasks import Result

RUN_TIMES_KEEP = 100


@dataclass
class _Pending:
    result: Result
    user: str
    stream: str
    entry_id: str


class ResultPublisher:
    """Group commit of results: `await publish(...)` returns once its transaction has executed.

    :param group: the consumer group whose task entries are acknowledged with their results
    :param results_stream: where result entries go
    :param ttl_s: how long the stored result and the task's hash are kept (Settings.blob_ttl_s)
    """

    def __init__(
        self, redis: Redis, *, group: str, results_stream: str = "photo_repair_results", ttl_s: int = 24 * 3600
    ):
        self.redis = redis
        self.group = group
        self.results_stream = results_stream
        self.ttl_s = ttl_s
        self._commits: GroupCommit[_Pending, None] = GroupCommit(self._write)

    async def publish(self, result: Result, *, user: str, stream: str = "", entry_id: str = "") -> None:
        """Write `result` and its bookkeeping; with an entry id, acknowledge that entry in the same MULTI."""
        await self._commits.submit(_Pending(result, user, stream, entry_id))

    async def _write(self, batch: list[_Pending]) -> list[None | BaseException]:
        ttl = self.ttl_s
        done_log: dict[str, int] = {}
        run_times: list[int] = []
        acks: dict[str, list[str]] = {}
        async with self.redis.pipeline(transaction=True) as pipe:
            for item in batch:
                result = item.result
                fields = result.encode()
                pipe.xadd(self.results_stream, fields)
                pipe.hset(keys.result(result.task_id), mapping=fields)
                pipe.expire(keys.result(result.task_id), ttl)
                pipe.hset(keys.task(result.task_id), mapping={"state": TaskState.DONE, "status": result.status})
                pipe.expire(keys.task(result.task_id), ttl)
                pipe.srem(keys.user_active(item.user), result.task_id)
                done_log[f"{result.task_id}:{result.status}:{result.run_ms}"] = result.finished_at
                if result.status == "ok":
                    run_times.append(result.run_ms)
                if item.entry_id:
                    acks.setdefault(item.stream, []).append(item.entry_id)
            pipe.zadd(keys.DONE_LOG, done_log)
            if run_times:
                pipe.lpush(keys.RUN_TIMES, *run_times)
                pipe.ltrim(keys.RUN_TIMES, 0, RUN_TIMES_KEEP - 1)
            for stream, ids in acks.items():
                pipe.xack(stream, self.group, *ids)
            replies = await pipe.execute(raise_on_error=False)
        # NOGROUP on the XACK: Redis lost the group (restarted empty), so nothing is pending to
        # acknowledge; the results themselves are written.
        failed = [reply for reply in replies if isinstance(reply, Exception) and not is_nogroup(reply)]
        if failed:
            raise failed[0]
        return [None] * len(batch)
