"""A Sender for tests: records what it was asked to send and can be told to fail."""

from __future__ import annotations

import asyncio

from backend.notifier import SendPermanent, SendRetry
from backend.tasks import Event, Result


class RecordingSender:
    """Keeps every result and event; `fail_with` is raised for the next `fail_times` sends."""

    def __init__(self) -> None:
        self.results: list[Result] = []
        self.events: list[Event] = []
        self.attempts = 0
        self.fail_with: Exception | None = None
        self.fail_times = 0
        self.started = False
        self.closed = False
        self._arrived = asyncio.Event()

    async def start(self) -> None:
        self.started = True

    async def close(self) -> None:
        self.closed = True

    async def send_result(self, result: Result) -> None:
        self.attempts += 1
        if self.fail_with is not None and self.fail_times > 0:
            self.fail_times -= 1
            raise self.fail_with
        self.results.append(result)
        self._arrived.set()

    async def send_event(self, event: Event) -> None:
        self.events.append(event)

    async def wait_for_results(self, count: int, timeout: float = 20.0) -> list[Result]:
        async def enough() -> None:
            while len(self.results) < count:
                self._arrived.clear()
                await self._arrived.wait()

        await asyncio.wait_for(enough(), timeout)
        return self.results


__all__ = ["RecordingSender", "SendPermanent", "SendRetry"]
