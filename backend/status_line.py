"""One status message per photo (or album) that only ever tells the truth and only moves forward.

Stages: received → queued → running → sending → done. Every writer of a status message (the bot
right after intake, the notifier's senders, the position announcer) asks `StatusLines.advance`
first. It says yes only when the stage moves forward, or stays the same with a different text; so
"Colorizing…" is never followed by "Queued — #1", and no edit is sent that the platform would
refuse as "message is not modified". A line is keyed by its reply channel (`line_id`): one Telegram
status message, or one Discord interaction's original response, whatever the number of photos.

The line also keeps the task ids under it (for one Cancel button for all of them), when it started
running (for the elapsed time) and how many of its photos are finished (so the status goes when the
last result is in).
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from backend import keys
from backend.replies import DiscordReply, Reply, TelegramReply
from backend.tasks import Event
from backend.texts import text

if TYPE_CHECKING:
    from backend.intake import Submitted

STAGES = ("received", "queued", "running", "sending", "done")
RECEIVED, QUEUED, RUNNING, SENDING, DONE = range(len(STAGES))
EVENT_STAGES = {"queued": QUEUED, "started": RUNNING, "progress": RUNNING, "retrying": RUNNING}
LINE_TTL_S = 24 * 3600

# KEYS: the line's hash. ARGV: stage, text, now (ms), ttl (s). Returns 1 when the caller should show `text`.
ADVANCE_SCRIPT = """
local stage = tonumber(redis.call('HGET', KEYS[1], 'stage') or '-1')
local new = tonumber(ARGV[1])
if new < stage then return 0 end
if new == stage and redis.call('HGET', KEYS[1], 'text') == ARGV[2] then return 0 end
if new ~= stage then redis.call('HSET', KEYS[1], 'since', ARGV[3]) end
redis.call('HSET', KEYS[1], 'stage', new, 'text', ARGV[2], 'at', ARGV[3])
redis.call('EXPIRE', KEYS[1], ARGV[4])
return 1
"""


def line_id(reply: Reply | None) -> str | None:
    """The status message a reply channel writes to, or None when it has none."""
    if isinstance(reply, TelegramReply) and reply.status_message_id:
        return f"telegram:{reply.chat_id}:{reply.status_message_id}"
    if isinstance(reply, DiscordReply) and reply.interaction_token:
        token = hashlib.sha256(reply.interaction_token.encode()).hexdigest()[:24]
        return f"discord:{reply.application_id}:{token}"
    return None


def _key(line: str, part: str = "") -> str:
    return f"repairbot:status:{line}" + (f":{part}" if part else "")


@dataclass(frozen=True)
class Line:
    stage: int
    text: str
    since_ms: int  # when the current stage began
    at_ms: int  # when the text was last written
    note: str = ""  # said under every later status text (e.g. "your image was shrunk")


class StatusLines:
    """The forward-only gate and bookkeeping of every status message, in Redis (shared by processes)."""

    def __init__(self, redis: Redis):
        self.redis = redis
        self._advance = redis.register_script(ADVANCE_SCRIPT)

    async def queued_again(self, first: Submitted, lang: str, *, count: int = 1) -> str | None:
        """The "Queued — #N" a redelivered event is answered with on its first status, or None when
        there is nothing to say again: its result is out, or its status moved past queued (never back)."""
        line = line_id(first.reply)
        if first.finished or line is None:
            return None
        current = await self.current(line)
        if current is not None and current.stage > QUEUED:
            return None
        eta = first.eta_s if await known_run_s(self.redis) is not None else None
        return queued_text(lang, first.position, eta, count=count)

    async def current(self, line: str) -> Line | None:
        stage, shown, since, at, note = await self.redis.hmget(_key(line), "stage", "text", "since", "at", "note")
        if stage is None:
            return None
        return Line(int(stage), _str(shown), int(since or 0), int(at or 0), _str(note))

    async def keep_note(self, line: str, note: str) -> None:
        """A sentence every later status of this line repeats, so no refresh loses it."""
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.hset(_key(line), "note", note)
            pipe.expire(_key(line), LINE_TTL_S)
            await pipe.execute()

    async def advance(self, line: str, stage: int, shown: str) -> bool:
        """Record `shown` as the line's text if that moves it forward (or changes it within its stage)."""
        return bool(await self._advance(keys=[_key(line)], args=[stage, shown, _now_ms(), LINE_TTL_S]))

    async def overtaken(self, line: str, stage: int) -> Line | None:
        """After a writer's edit for `stage` went out: the line's newer text when another process moved
        it further meanwhile, else None. Two processes' edits can reach the platform in either order, so
        "Queued" may land after "Colorizing…"; the writer that finds itself overtaken shows the newer text
        again, and the status ends on the truth. Nothing once the line is done (the result replaced it).
        Best effort: None when Redis can't be asked (the edit already went out; the photo is queued)."""
        try:
            current = await self.current(line)
        except (OSError, TimeoutError, RedisConnectionError, RedisTimeoutError):
            return None
        if current is None or not stage < current.stage < DONE or not current.text:
            return None
        return current

    async def finish(self, line: str) -> bool:
        """The line is done (result sent, refusal shown): nothing may edit it any more. False if it already was."""
        return await self.advance(line, DONE, "")

    async def add_task(self, line: str, task_id: str) -> None:
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.sadd(_key(line, "tasks"), task_id)
            pipe.expire(_key(line, "tasks"), LINE_TTL_S)
            await pipe.execute()

    async def tasks(self, line: str) -> list[str]:
        return sorted(_str(m) for m in await self.redis.smembers(_key(line, "tasks")))

    async def expect(self, line: str, count: int, owner: str) -> None:
        """`count` photos were queued under this line, for `owner` (the backend's user id)."""
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.hset(_key(line), mapping={"expected": count, "owner": owner})
            pipe.expire(_key(line), LINE_TTL_S)
            await pipe.execute()

    async def owner(self, line: str) -> str | None:
        value = await self.redis.hget(_key(line), "owner")
        return _str(value) if value is not None else None

    async def part_finished(self, line: str, task_id: str, total: int | None = None) -> bool:
        """Count one photo of the line as finished (once per task); True when it was the last expected."""
        key = _key(line, "finished")
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.sadd(key, task_id)
            pipe.expire(key, LINE_TTL_S)
            pipe.scard(key)
            pipe.hget(_key(line), "expected")
            _, _, finished, expected = await pipe.execute()
        wanted = int(expected) if expected is not None else (total or 1)
        return int(finished) >= wanted


async def known_run_s(redis: Redis) -> float | None:
    """The recent average run time, or None before any photo has finished (then no estimate is shown)."""
    recent = await redis.lrange(keys.RUN_TIMES, 0, 49)
    if not recent:
        return None
    return sum(int(x) for x in recent) / len(recent) / 1000.0


def queued_text(lang: str, position: int, eta_s: int | None, *, count: int = 1) -> str:
    """ "Queued — #N in line, about M s." (no estimate while run times are unknown)."""
    if count > 1:
        key = "queued_album" if eta_s else "queued_album_no_eta"
        return text(key, lang, count=count, position=position, eta=eta_s)
    return text("queued" if eta_s else "queued_no_eta", lang, position=position, eta=eta_s)


def running_text(lang: str, *, elapsed_s: float, estimate_s: float | None, retrying: bool = False) -> str:
    """ "Colorizing… 4 s (about 6 s)": the elapsed time, with an estimate when run times are known."""
    if retrying:
        return text("retrying", lang)
    elapsed = int(elapsed_s)
    eta = max(1, round(estimate_s)) if estimate_s else 0
    if eta and elapsed < eta:  # past the estimate: only the time it has taken
        return text("running_eta", lang, elapsed=elapsed, eta=eta)
    return text("running", lang, elapsed=elapsed) if elapsed else text("started", lang)


def render_event(
    event: Event, line: Line | None, run_s: float | None, lang: str, *, now_ms: int | None = None
) -> tuple[int, str]:
    """The stage and the sentence an event puts on its status message."""
    note = f"\n{line.note}" if line is not None and line.note else ""
    if event.state == "queued":
        sentence = queued_text(lang, event.position, event.eta_s or None, count=max(1, event.count))
        if event.backlogged:
            sentence += "\n" + text("backlog_waiting", lang, count=event.backlogged)
        return QUEUED, sentence + note
    running_since = line.since_ms if line is not None and line.stage == RUNNING else None
    elapsed = ((now_ms or _now_ms()) - running_since) / 1000 if running_since else 0.0
    return RUNNING, running_text(
        lang, elapsed_s=max(0.0, elapsed), estimate_s=run_s, retrying=event.state == "retrying"
    ) + note


def _str(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value or "")


def _now_ms() -> int:
    return int(time.time() * 1000)
