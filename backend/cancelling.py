"""Cancelling what a user has in flight: tasks queued or running, and photos still in their backlog.

The bots' Cancel buttons and /cancel come here, so a photo waiting in the per-user backlog is cancelled
like one in the queue: taken off the backlog and answered "cancelled" through the results stream, which
closes its status (and counts it in its album) exactly as the worker's cancellations do.
"""

from __future__ import annotations

from collections.abc import Iterable

from backend.admin import Admin
from backend.backlog import Backlog


class Cancelling:
    def __init__(self, admin: Admin, backlog: Backlog):
        self.admin = admin
        self.backlog = backlog

    async def everything_of(self, user: str) -> int:
        """/cancel: every photo of `user`, in the backlog or queued or running; how many were cancelled."""
        taken, _ = await self.backlog.cancel(user)
        # After the backlog: a photo the backlog queued meanwhile is among the user's active tasks by now.
        return taken + await self.admin.cancel_user(user)

    async def under_status(self, line: str, task_ids: Iterable[str], *, owner: str, by_admin: bool = False) -> int:
        """A Cancel button under one status message: the tasks it shows and the owner's backlogged photos
        under it. `by_admin`: anyone's tasks may be flagged, not only the owner's."""
        taken, queued = await self.backlog.cancel(owner, line=line)
        flags = [await self.admin.cancel(task_id, user=None if by_admin else owner) for task_id in {*task_ids, *queued}]
        return taken + sum(flags)
