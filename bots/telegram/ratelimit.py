"""PTB's AIORateLimiter, plus a note of when Telegram last asked us to wait.

The limiter retries a 429 itself (sleeping `retry_after`), so the caller never sees it; progress
edits want to know anyway, to be skipped while the bot is rate-limited rather than pile up.
"""

from __future__ import annotations

import asyncio
from typing import Any

from telegram.error import RetryAfter, TelegramError
from telegram.ext import AIORateLimiter

MAX_RETRIES = 3
NO_RETRY = "no-retry"  # pass as rate_limit_args: a 429 on this request is given up, not waited out


class SkippedWhileLimited(TelegramError):
    """A best-effort request (a progress edit) that met a 429: dropped, so results are not held up."""


def retry_after_seconds(exc: RetryAfter) -> float:
    """The wait Telegram asked for, fractions kept and without PTB 22's int-vs-timedelta warning."""
    exact = getattr(exc, "_retry_after", None)  # what PTB's own limiter reads, for the same reasons
    if exact is not None:
        return exact.total_seconds()
    value = exc.retry_after
    return value if isinstance(value, (int, float)) else value.total_seconds()


class FloodAwareRateLimiter(AIORateLimiter):
    """AIORateLimiter that remembers until when (loop time) Telegram asked for a pause."""

    def __init__(self, **kwargs: Any):
        kwargs.setdefault("max_retries", MAX_RETRIES)
        super().__init__(**kwargs)
        self.limited_until = 0.0

    def is_limited(self) -> bool:
        return asyncio.get_running_loop().time() < self.limited_until

    async def process_request(self, callback, args, kwargs, endpoint, data, rate_limit_args):  # type: ignore[override]
        best_effort = rate_limit_args == NO_RETRY

        async def noting_retry_after(*a: Any, **kw: Any) -> Any:
            try:
                return await callback(*a, **kw)
            except RetryAfter as exc:
                until = asyncio.get_running_loop().time() + retry_after_seconds(exc)
                self.limited_until = max(self.limited_until, until)
                if best_effort:  # not a RetryAfter any more: the base limiter will not sleep and retry it
                    raise SkippedWhileLimited(f"skipped, rate limited for {retry_after_seconds(exc):g} s") from exc
                raise

        return await super().process_request(
            noting_retry_after, args, kwargs, endpoint, data, None if best_effort else rate_limit_args
        )
