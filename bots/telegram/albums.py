"""Albums: photos sent together (one media_group_id) arrive as separate updates; so do photos sent one
by one in a moment (a burst).

The first photo of a group starts a window on PTB's JobQueue; the photos arriving meanwhile join it,
and when the window closes one job hands the whole group, in message order, to the handler that
queues it under one status message. No handler sleeps. A bot that stops drains its open windows
first. What Redis keeps about the group is
backend.albums'.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from telegram import Message, Update
from telegram.ext import Application, CallbackContext, JobQueue

COLLECT_WINDOW_S = 1.0


@dataclass
class Gathered:
    """A group's messages so far (the data of its window's job), the update that opened it (errors are
    reported against it) and what to do with the whole group."""

    key: tuple[int, str]
    first: Update
    ripe: Callable[[Any, Gathered], Awaitable[None]]  # (the job's context, the whole group)
    messages: list[Message] = field(default_factory=list)


class AlbumWindow:
    """Gathers the messages of one media group (or one burst) for `window_s`, on the JobQueue."""

    def __init__(self, window_s: float = COLLECT_WINDOW_S):
        self.window_s = window_s
        self._groups: dict[tuple[int, str], Gathered] = {}

    def add(self, update: Update, job_queue: JobQueue[Any], ripe: Callable[[Any, Gathered], Awaitable[None]]) -> None:
        """Join the photo to its group; the group's first photo schedules `ripe` for when the window closes."""
        message = update.effective_message
        assert message is not None  # a photo handler's update has one
        key = (message.chat_id, str(message.media_group_id))
        if key in self._groups:
            self._groups[key].messages.append(message)
            return
        gathered = self._groups[key] = Gathered(key, update, ripe, [message])
        job_queue.run_once(self._closed, self.window_s, data=gathered, name=f"album:{key[0]}:{key[1]}")

    async def drain(self, application: Application[Any, Any, Any, Any, Any, Any]) -> None:
        """Queue every group still gathering, now: the bot is stopping, and these photos were already
        taken from Telegram; the JobQueue drops jobs not yet run when it stops."""
        for gathered in list(self._groups.values()):
            await self._ripen(application.context_types.context(application), gathered)

    async def _closed(self, context: CallbackContext[Any, Any, Any, Any]) -> None:
        assert context.job is not None
        await self._ripen(context, context.job.data)  # type: ignore[arg-type]

    async def _ripen(self, context: CallbackContext[Any, Any, Any, Any], gathered: Gathered) -> None:
        if self._groups.pop(gathered.key, None) is None:  # drained already
            return
        gathered.messages.sort(key=lambda m: m.message_id)
        try:
            await gathered.ripe(context, gathered)
        except Exception as exc:  # noqa: BLE001 - reported against the photo's update, so its user is told
            await context.application.process_error(gathered.first, exc, job=context.job)
