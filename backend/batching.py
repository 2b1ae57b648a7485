"""Group commit: requests made while a write is in flight go out together in the next one.

Many coroutines each need a small Redis write (a result to publish, a send claim to take or close).
Sent one by one that is a round trip each; here every request made in the same event-loop tick, or
while the previous write is in flight, joins one pipeline. An idle process still writes a lone
request at once: nothing waits for a batch to fill.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

Request = TypeVar("Request")
Reply = TypeVar("Reply")


class GroupCommit(Generic[Request, Reply]):
    """`await submit(request)` returns the reply `write` gave for it, once its batch is written.

    :param write: writes a batch and returns one reply per request, in order; an Exception in
        the list is raised to that request's caller alone, and an exception `write` raises goes to
        every caller in the batch
    """

    def __init__(self, write: Callable[[list[Request]], Awaitable[list[Reply | BaseException]]]):
        self._write = write
        self._queue: list[tuple[Request, asyncio.Future[Reply]]] = []
        self._writing = False
        self._writer: asyncio.Future[None] | None = None  # held: the loop keeps only weak references to tasks

    async def submit(self, request: Request) -> Reply:
        loop = asyncio.get_running_loop()
        done: asyncio.Future[Reply] = loop.create_future()
        self._queue.append((request, done))
        if not self._writing:
            self._writing = True
            loop.call_soon(self._start_writer)  # same-tick requests join this write
        return await done

    def _start_writer(self) -> None:
        self._writer = asyncio.ensure_future(self._write_all())

    async def _write_all(self) -> None:
        try:
            while self._queue:
                batch, self._queue = self._queue, []
                try:
                    replies = await self._write([request for request, _ in batch])
                except BaseException as exc:  # noqa: BLE001 - every waiter learns what happened
                    for _, done in batch:
                        if not done.done():
                            done.set_exception(exc)
                    if isinstance(exc, asyncio.CancelledError):
                        raise
                    continue
                for (_, done), reply in zip(batch, replies, strict=True):
                    if done.done():
                        continue
                    if isinstance(reply, BaseException):
                        done.set_exception(reply)
                    else:
                        done.set_result(reply)
        finally:
            self._writing = False
