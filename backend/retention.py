"""What is kept, and for how long, beyond the streams' own MINID trimming.

- Dead letters: kept until older than `DEAD_MAX_AGE_S` or beyond the newest `DEAD_MAX_LEN`; each
  one trimmed is logged (entry id, task id, reason), so what was dropped can still be told. At most
  `TRIM_BATCH` per round: a huge backlog is worked off over a few rounds, never in one long call.
- Blob files (`BLOB_STORE=fs`): swept on a timer (`BLOB_SWEEP_EVERY_S`); Redis blobs expire by TTL.
"""

from __future__ import annotations

import logging
from typing import Any

from redis.asyncio import Redis

from backend import metrics
from backend.tasks import now_ms

log = logging.getLogger(__name__)

TRIM_BATCH = 100


def _text(value: Any) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


async def trim_dead_letters(
    redis: Redis,
    *,
    dead_stream: str = "photo_repair_dead",
    dead_max_len: int = 10_000,
    dead_max_age_s: int = 14 * 24 * 3600,
) -> int:
    """Remove (and log) the oldest dead letters that are past the age (`dead_max_age_s`) or beyond the
    newest `dead_max_len` of `dead_stream`."""
    length = int(await redis.xlen(dead_stream))
    if not length:
        return 0
    excess = max(0, length - dead_max_len)
    cutoff_ms = now_ms() - dead_max_age_s * 1000
    oldest = await redis.xrange(dead_stream, min="-", max="+", count=TRIM_BATCH)
    doomed = []
    for index, (entry_id, fields) in enumerate(oldest):
        if index < excess or int(_text(entry_id).split("-")[0]) < cutoff_ms:
            doomed.append((_text(entry_id), fields))
        else:
            break  # ids grow with time: everything after is younger and within the length
    if not doomed:
        return 0
    for entry_id, fields in doomed:
        why = "too old" if int(entry_id.split("-")[0]) < cutoff_ms else "over DEAD_MAX_LEN"
        log.info(
            "trimmed dead letter %s (%s): task %s, reason %s",
            entry_id,
            why,
            _text(fields.get(b"task_id", b"?")),
            _text(fields.get(b"reason", b"?")),
        )
    await redis.xdel(dead_stream, *[entry_id for entry_id, _ in doomed])
    metrics.DEAD_LETTERS_TRIMMED.inc(len(doomed))
    return len(doomed)


async def sweep_blobs(blobs: Any) -> int:
    """Sweep a filesystem blob store; stores that expire by themselves have no `sweep`."""
    sweep = getattr(blobs, "sweep", None)
    if sweep is None:
        return 0
    removed = int(await sweep())
    if removed:
        log.info("swept %d expired blob file(s)", removed)
        metrics.BLOBS_SWEPT.inc(removed)
    return removed
