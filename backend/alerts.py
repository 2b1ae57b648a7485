"""Alerts to the admins in chat: the backend decides, the bots' senders deliver.

Conditions, looked at by one process at a time (a lease, see `backend.ops`):
- `dead_letters`: the dead-letter stream grew (counted by XINFO STREAM entries-added, so trimming
  never looks like growth or hides it);
- `comfyui_down`: every ComfyUI instance of the running workers is down (out of their rotation or
  not answering its health check, as they last reported); a second message says it is back;
- `queue_wait`: the oldest task nobody has taken yet has waited longer than `ALERT_WAIT_S`; and back;
- `bot_error`: a bot's error handler caught an exception (`report_bot_error`, called by the bots);
- `data_lost`: a worker or notifier found its consumer group gone (Redis restarted empty): tasks
  still waiting in line then are lost and their users can't be told, so the admins are.

Deduplicated and rate-limited with state in Redis, so a new leader never repeats what the old one
sent: a lasting condition is announced once, reminded at most every `ALERT_REPEAT_S`, and its end
announced once; events (dead letters, bot errors) are sent at most once per `ALERT_REPEAT_S` per
kind, with what happened meanwhile counted in. `/mute_alerts <minutes>` silences every alert: events
meanwhile are dropped (nothing stale floods in afterwards), a condition still holding when the mute
ends is announced then, and one that began and ended within the mute is never mentioned.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import traceback
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import ResponseError

from backend import keys, metrics
from backend.redact import scrub
from backend.tasks import now_ms
from backend.texts import text

log = logging.getLogger(__name__)

MUTED = "repairbot:alerts:muted"
BOT_ERRORS = "repairbot:alerts:bot_errors"  # hash: platform -> errors caught so far
BOT_ERROR_LAST = "repairbot:alerts:bot_error_last"  # hash: platform -> the last one, in a few words
BOT_ERROR_TRACE = "repairbot:alerts:bot_error_trace"  # hash: platform -> the last one's traceback, short
TRACE_FRAMES = 3  # the innermost frames: where it broke, not how the library got there
TRACE_CHARS = 900  # fits an alert in one Telegram or Discord message with room to spare
STATE_TTL_S = 30 * 24 * 3600
CONFIRM_ROUNDS = 2


def state_key(name: str) -> str:
    return f"repairbot:alerts:state:{name}"


async def mute(redis: Redis, minutes: int) -> None:
    """Silence every alert for `minutes` (0 lifts the mute)."""
    if minutes <= 0:
        await redis.delete(MUTED)
    else:
        await redis.set(MUTED, "1", ex=minutes * 60)


async def muted_for_s(redis: Redis) -> int:
    return max(0, int(await redis.ttl(MUTED)))


def short_traceback(error: BaseException) -> str:
    """The innermost frames and the message of `error`, with bot tokens, interaction tokens and URL
    credentials scrubbed, cut to TRACE_CHARS from the end: what an admin chat may be shown."""
    frames = traceback.TracebackException.from_exception(error, limit=-TRACE_FRAMES)
    text = scrub("".join(frames.format(chain=False))).strip()
    return text if len(text) <= TRACE_CHARS else "…" + text[-TRACE_CHARS:]


async def report_bot_error(redis: Redis, platform: str, error: BaseException | None) -> None:
    """Called from a bot's error handler (PTB's errorhandlerbot pattern): counted for the admins' alert,
    which carries the last one's short traceback. Never raises (the handler has a user to answer)."""
    root = error.__cause__ or error if error is not None else None  # wrappers (CommandInvokeError) name the cause
    summary = type(root).__name__ if root is not None else "unknown error"
    trace = short_traceback(root) if root is not None else ""
    try:
        async with redis.pipeline(transaction=True) as pipe:
            pipe.hincrby(BOT_ERRORS, platform, 1)
            pipe.hset(BOT_ERROR_LAST, platform, summary)
            pipe.hset(BOT_ERROR_TRACE, platform, trace)
            for key in (BOT_ERRORS, BOT_ERROR_LAST, BOT_ERROR_TRACE):
                pipe.expire(key, STATE_TTL_S)
            await asyncio.wait_for(pipe.execute(), timeout=2)
    except Exception as exc:  # noqa: BLE001 - best effort
        log.warning("could not record a %s bot error for the admins: %s", platform, exc)


@dataclass(frozen=True)
class Reading:
    """What the evaluator saw this round."""

    dead_added: int  # XINFO STREAM entries-added of the dead-letter stream
    comfyui_up: list[bool]  # one per configured instance
    oldest_waiting_s: float
    bot_errors: dict[str, tuple[int, str]]  # platform -> (count so far, last summary)
    bot_error_traces: dict[str, str] = field(default_factory=dict)  # platform -> the last one's short traceback
    data_lost: int = 0  # times a consumer group was found gone (keys.DATA_LOST), all groups together


Deliver = Callable[[str], Awaitable[int]]  # sends one message to the admins; returns chats reached


async def read_dead_added(redis: Redis, stream: str) -> int:
    try:
        info = await redis.xinfo_stream(stream)
    except ResponseError:
        return 0
    return int(info.get("entries-added") or info.get("length") or 0)


async def read_data_lost(redis: Redis) -> int:
    return sum(int(count) for count in (await redis.hgetall(keys.DATA_LOST)).values())


async def read_bot_errors(redis: Redis) -> dict[str, tuple[int, str]]:
    counts = await redis.hgetall(BOT_ERRORS)
    last = await redis.hgetall(BOT_ERROR_LAST)
    return {_text(k): (int(v), _text(last.get(k, b"?"))) for k, v in counts.items()}


async def read_bot_error_traces(redis: Redis) -> dict[str, str]:
    return {_text(k): _text(v) for k, v in (await redis.hgetall(BOT_ERROR_TRACE)).items()}


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _bot_error_message(lang: str, platform: str, last: str, trace: str, n: int) -> str:
    message = text("alert_bot_errors", lang, count=n, platform=platform, last=last)
    return f"{message}\n\n{trace}" if trace else message


class Alerts:
    """Evaluates the conditions and sends what is due through `deliver`.

    :param alert_lang: the language of the messages (en, zh)
    :param alert_wait_s: a task waiting longer than this raises the slow-queue alert
    :param alert_repeat_s: how often a condition still firing is said again
    """

    def __init__(
        self,
        redis: Redis,
        deliver: Deliver,
        *,
        alert_lang: str = "en",
        alert_wait_s: int = 900,
        alert_repeat_s: int = 1800,
    ):
        self.redis = redis
        self.deliver = deliver
        self.alert_lang = alert_lang
        self.alert_wait_s = alert_wait_s
        self.alert_repeat_s = alert_repeat_s

    async def evaluate(self, reading: Reading) -> list[str]:
        """One round: the messages sent."""
        lang = self.alert_lang
        sent: list[str] = []
        down = bool(reading.comfyui_up) and not any(reading.comfyui_up)
        sent += await self._condition(
            "comfyui_down",
            down,
            text("alert_comfyui_down", lang, count=len(reading.comfyui_up)),
            text("alert_comfyui_back", lang),
        )
        waiting = reading.oldest_waiting_s > self.alert_wait_s
        sent += await self._condition(
            "queue_wait",
            waiting,
            text(
                "alert_queue_wait",
                lang,
                minutes=int(reading.oldest_waiting_s // 60),
                threshold=self.alert_wait_s // 60,
            ),
            text("alert_queue_wait_cleared", lang),
        )
        sent += await self._event(
            "dead_letters", reading.dead_added, lambda n: text("alert_dead_letters", lang, count=n)
        )
        sent += await self._event(
            "data_lost",
            reading.data_lost,
            lambda n: text("alert_data_lost", lang, count=n),
            baseline=0,  # the counter lives in the emptied Redis: it only exists once a loss was seen
        )
        for platform, (errors, last) in sorted(reading.bot_errors.items()):
            sent += await self._event(
                f"bot_error:{platform}",
                errors,
                functools.partial(_bot_error_message, lang, platform, last, reading.bot_error_traces.get(platform, "")),
                baseline=0,  # the counter itself only exists once a bot caught something
            )
        return sent

    async def _condition(self, name: str, seen_now: bool, firing: str, cleared: str) -> list[str]:
        """A state: announced once (or as soon as a mute ends), reminded, and its end told only to
        admins who were told it began. A change counts once seen CONFIRM_ROUNDS rounds in a row, so a
        single failed probe or a process starting up is not news."""
        key = state_key(name)
        state = await self.redis.hgetall(key)
        was_firing = state.get(b"firing") == b"1"
        same = (state.get(b"observed") == b"1") == seen_now
        streak = min(CONFIRM_ROUNDS, int(state.get(b"streak") or 0) + 1) if same else 1
        await self._save(key, observed=int(seen_now), streak=streak)
        active = seen_now if streak >= CONFIRM_ROUNDS else was_firing
        announced = state.get(b"announced") == b"1"
        last_sent = int(state.get(b"sent_ms") or 0)
        now = now_ms()
        if active and (not announced or now - last_sent >= self.alert_repeat_s * 1000):
            message = text("alert_still", self.alert_lang, message=firing) if announced else firing
            sent = await self._send(name, message)
            await self._save(key, firing=1, announced=int(bool(sent) or announced), sent_ms=now if sent else last_sent)
            return sent
        if active and not was_firing:
            await self._save(key, firing=1, announced=int(announced), sent_ms=last_sent)
        if not active and was_firing:
            await self._save(key, firing=0, announced=0, sent_ms=last_sent)
            return await self._send(name, cleared) if announced else []
        return []

    async def _event(
        self, name: str, counter: int, message: Callable[[int], str], *, baseline: int | None = None
    ) -> list[str]:
        """A monotonic counter: alert on growth since the last alert, at most once per ALERT_REPEAT_S.

        :param baseline: where a counter never seen before starts; None means "now" (what happened
            before the alerts were watching is not news)
        """
        key = state_key(name)
        state = await self.redis.hgetall(key)
        if not state and baseline is None:
            await self._save(key, seen=counter, sent_ms=0)
            return []
        seen = int(state.get(b"seen") or 0) if state else baseline or 0
        last_sent = int(state.get(b"sent_ms") or 0)
        if counter < seen:  # counter reset (Redis emptied): start over from here
            await self._save(key, seen=counter, sent_ms=last_sent)
            return []
        if counter == seen or now_ms() - last_sent < self.alert_repeat_s * 1000:
            return []
        sent = await self._send(name.split(":")[0], message(counter - seen))
        await self._save(key, seen=counter, sent_ms=now_ms() if sent else last_sent)  # muted: dropped, not queued
        return sent

    async def _save(self, key: str, **fields: int) -> None:
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.hset(key, mapping=fields)
            pipe.expire(key, STATE_TTL_S)
            await pipe.execute()

    async def _send(self, name: str, message: str) -> list[str]:
        """[message] when it went out, [] while muted."""
        if await self.redis.exists(MUTED):
            log.debug("alert %s muted: %s", name, message)
            return []
        reached = await self.deliver(message)
        if reached:
            metrics.ALERTS_SENT.labels(name).inc()
            log.warning("alert %s sent to %d admin chat(s): %s", name, reached, message)
        else:  # no admin ids set, or no platform reachable: the log is where it goes
            log.warning("alert %s (no admin chat reached): %s", name, message)
        return [message]
