"""The worker's results, written in groups (backend.batching): one script call per batch of finished
tasks, XACK inside.

A finished task needs its result entry, the stored copy, its bookkeeping and the XACK of its task
entry. Written one task at a time that is two round trips each; here every task that finishes while
a write is in flight joins the next one, so under load a single round trip carries many results,
and an idle worker still writes each result at once (nothing waits for a batch to fill). One Lua
call, not a MULTI of six commands a task: Redis parses one command, and the client packs one.

Everything for a task is in the same atomic step as its XACK: a worker that dies before it ran leaves
the task pending (redelivered, and the stored result, if any, is re-published), never acknowledged
without a result.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from redis.asyncio import Redis

from backend import keys
from backend.batching import GroupCommit
from backend.task_handle import TaskState
from backend.tasks import Result

RUN_TIMES_KEEP = 100
PUBLISH_CHUNK = 500  # tasks per script call: Lua unpacks at most ~8,000 values at once

# KEYS: the results stream, the done log, the run times; then per task its result hash, its task hash,
# its user's active set and the stream of its task entry. ARGV: TTL (s), run times kept, group, the
# done state; then per task one JSON array: status, task id, done-log member, finished at, run ms ('' unless
# ok), task entry id ('' for none), then the result's fields as name, value pairs (one argument a task, not
# thirty: redis-py packs each argument in Python). NOGROUP on an XACK (Redis lost the group, restarted
# empty) is skipped: nothing is pending to acknowledge, the result is written.
PUBLISH_SCRIPT = """
local ttl, keep, group, done = ARGV[1], tonumber(ARGV[2]), ARGV[3], ARGV[4]
local finished_log, run_times, acks = {}, {}, {}
for i = 5, #ARGV do
  local task = cjson.decode(ARGV[i])
  local status, task_id, member, finished, run_ms, entry_id = unpack(task, 1, 6)
  local k = 4 * (i - 5) + 4
  redis.call('XADD', KEYS[1], '*', unpack(task, 7, #task))
  redis.call('HSET', KEYS[k], unpack(task, 7, #task))
  redis.call('EXPIRE', KEYS[k], ttl)
  redis.call('HSET', KEYS[k+1], 'state', done, 'status', status)
  redis.call('EXPIRE', KEYS[k+1], ttl)
  redis.call('SREM', KEYS[k+2], task_id)
  finished_log[#finished_log + 1] = finished
  finished_log[#finished_log + 1] = member
  if run_ms ~= '' then run_times[#run_times + 1] = run_ms end
  if entry_id ~= '' then
    local stream = KEYS[k+3]
    acks[stream] = acks[stream] or {}
    table.insert(acks[stream], entry_id)
  end
end
redis.call('ZADD', KEYS[2], unpack(finished_log))
if #run_times > 0 then
  redis.call('LPUSH', KEYS[3], unpack(run_times))
  redis.call('LTRIM', KEYS[3], 0, keep - 1)
end
for stream, ids in pairs(acks) do
  local acked = redis.pcall('XACK', stream, group, unpack(ids))
  if type(acked) == 'table' and acked.err and not string.find(acked.err, 'NOGROUP', 1, true) then
    return redis.error_reply(acked.err)
  end
end
return 1
"""


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
        self._publish = redis.register_script(PUBLISH_SCRIPT)
        self._loaded = False

    async def publish(self, result: Result, *, user: str, stream: str = "", entry_id: str = "") -> None:
        """Write `result` and its bookkeeping; with an entry id, acknowledge that entry in the same step."""
        await self._commits.submit(_Pending(result, user, stream, entry_id))

    async def _write(self, batch: list[_Pending]) -> list[None | BaseException]:
        for start in range(0, len(batch), PUBLISH_CHUNK):
            await self._write_chunk(batch[start : start + PUBLISH_CHUNK])
        return [None] * len(batch)

    async def _write_chunk(self, batch: list[_Pending]) -> None:
        script_keys: list[str] = [self.results_stream, keys.DONE_LOG, keys.RUN_TIMES]
        args: list[str | int] = [self.ttl_s, RUN_TIMES_KEEP, self.group, TaskState.DONE]
        for item in batch:
            result = item.result
            script_keys += [keys.result(result.task_id), keys.task(result.task_id), keys.user_active(item.user)]
            script_keys.append(item.stream or self.results_stream)  # no entry: nothing acknowledged there
            task = [
                result.status,
                result.task_id,
                f"{result.task_id}:{result.status}:{result.run_ms}",
                str(result.finished_at),
                str(result.run_ms) if result.status == "ok" else "",
                item.entry_id,
            ]
            for name, value in result.encode().items():
                task += [name, value]
            args.append(json.dumps(task, ensure_ascii=False))
        if not self._loaded:  # once, so that the call that writes results is the first one sent (not NOSCRIPT)
            await self.redis.script_load(PUBLISH_SCRIPT)
            self._loaded = True
        await self._publish(keys=script_keys, args=args)
