"""Albums: photos sent together (one media_group_id) arrive as separate updates.

The bot collects a group for a short window, then queues one task per photo under one status
message; what Redis keeps about the group is backend.albums'.
"""

from __future__ import annotations

import asyncio

from telegram import Message

COLLECT_WINDOW_S = 1.0


class AlbumCollector:
    """Gathers the messages of one media group for `window_s` (updates are handled concurrently)."""

    def __init__(self, window_s: float = COLLECT_WINDOW_S):
        self.window_s = window_s
        self._groups: dict[tuple[int, str], list[Message]] = {}

    async def collect(self, message: Message) -> list[Message] | None:
        """The whole group for the first message's handler (after the window); None for the others."""
        key = (message.chat_id, str(message.media_group_id))
        if key in self._groups:
            self._groups[key].append(message)
            return None
        self._groups[key] = [message]
        await asyncio.sleep(self.window_s)
        return sorted(self._groups.pop(key), key=lambda m: m.message_id)
