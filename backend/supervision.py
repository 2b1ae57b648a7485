"""Keeping a process's parts running until it is told to stop: signals, clean stops, restarts with backoff."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Awaitable, Callable
from typing import Any, Protocol, TypeVar

from backend.backoff import Backoff, wait_event

log = logging.getLogger("repairbot")

T = TypeVar("T")


class Component(Protocol):
    """A long-running part (Worker, Notifier) that stops in its own way when asked."""

    async def run(self) -> None: ...

    def stop(self) -> None: ...


async def run_until_signal(main: Callable[[asyncio.Event], Awaitable[T]]) -> T:
    """Run `main(stop)`; SIGINT and SIGTERM set `stop` so every part can finish cleanly."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    return await main(stop)


async def serve(component: Component, stop: asyncio.Event) -> None:
    """Run a Worker or Notifier until `stop` is set, then let it shut down in its own way."""
    runner = asyncio.create_task(component.run())
    stopper = asyncio.create_task(stop.wait())
    await asyncio.wait({runner, stopper}, return_when=asyncio.FIRST_COMPLETED)
    component.stop()
    stopper.cancel()
    await runner


async def with_ops(ops: Any, main: Awaitable[Any]) -> Any:
    """Run `main` with the process's metrics, health, alerts and retention beside it; they end with it."""
    from backend.ops import run_ops_until

    done = asyncio.Event()
    side = asyncio.create_task(run_ops_until(ops, done))
    try:
        return await main
    finally:
        done.set()
        await side


async def restarting(name: str, start: Callable[[], Awaitable[Any]], stop: asyncio.Event) -> None:
    """A bot that fails (Telegram or Discord unreachable at start, say) is started again with backoff,
    so one platform's outage neither stops the others nor leaves that bot dead until a restart."""
    backoff = Backoff(1.0, 60.0)
    while not stop.is_set():
        delay = backoff.next_delay()
        try:
            await start()
            return
        except Exception:  # noqa: BLE001 - report, wait, try again
            log.exception("%s bot stopped with an error; starting it again in %.0f s", name, delay)
        await wait_event(stop, delay)


async def logged(name: str, part: Awaitable[Any]) -> None:
    """One part of `up` failing is reported at once; the other parts keep running."""
    try:
        await part
    except Exception:  # noqa: BLE001 - report and let the rest of the system carry on
        log.exception("%s stopped with an error", name)
