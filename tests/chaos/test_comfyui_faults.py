"""ComfyUI down (connections refused), accepting connections but never answering, its WebSocket silent
while prompts complete, and a task slower than MIN_IDLE_MS. Nothing may fail because of ComfyUI:
photos wait and are delivered once it is back."""

from __future__ import annotations

import asyncio

import pytest

from tests.chaos.conftest import CHAOS_LONG
from tests.chaos.ledger import assert_clean

OUTAGE_S = 60 if CHAOS_LONG else 8  # the 60 s under CHAOS_LONG; 8 s keeps CI short


async def start_behind_comfy_proxy(stack, workers: int = 1):
    proxy = await stack.proxy("comfyui", stack.comfy.port)
    env = {"COMFYUI_URL": proxy.url("http")}
    await asyncio.gather(
        *[stack.spawn(f"worker{i + 1}", "worker", env=env) for i in range(workers)],
        stack.spawn("notifier", "notifier"),
        stack.spawn("telegram", "telegram"),
    )
    return proxy


@pytest.mark.timeout(120 + OUTAGE_S * 2)
@pytest.mark.parametrize("mode", ["reset", "blackhole"])
async def test_comfyui_unreachable_then_back(chaos, ledger, mode):
    """`reset`: ComfyUI down (every connection refused with a RST). `blackhole`: it accepts connections
    but never answers. Photos sent during the outage are delivered after it, none failed."""
    async with chaos(env={"MIN_IDLE_MS": "4000"}, comfy_delay_s=0.2) as stack:
        proxy = await start_behind_comfy_proxy(stack)
        first = await stack.send_telegram_photo()
        assert await stack.wait_answered([first], timeout=60), stack.logs()
        ledger.fault()
        proxy.set_mode(mode)
        subs = await stack.send_telegram_photos(4)
        await asyncio.sleep(OUTAGE_S)
        assert not any(stack.outcome(s).refused for s in subs), "a photo failed because ComfyUI was away"
        proxy.set_mode("pass")
        await stack.wait_for(lambda: any(stack.outcome(s).delivered for s in subs), timeout=90)
        ledger.detected()
        assert await stack.wait_answered(subs, timeout=90), stack.logs()
        ledger.recovered()
        ledger.note(f"ComfyUI away {OUTAGE_S} s ({mode}); detect/recover counted from the outage start")
        await stack.settle()
        await stack.fill_ledger()
    assert_clean(ledger)
    assert ledger.delivered == 5 and ledger.refused == 0, ledger


@pytest.mark.timeout(120)
async def test_comfyui_websocket_silent_while_prompts_complete(chaos, ledger):
    """The socket stays open but carries nothing; the worker must notice through /history. The result
    image travels over that socket (SaveImageWebsocket), so each photo may run once more with SaveImage."""
    async with chaos(env={"MIN_IDLE_MS": "4000"}, comfy_delay_s=0.2) as stack:
        stack.comfy.stall_ws = True
        await stack.start_default(workers=1)
        ledger.fault()
        subs = await stack.send_telegram_photos(3)
        await stack.wait_for(lambda: any(stack.outcome(s).delivered for s in subs), timeout=60)
        ledger.detected()
        assert await stack.wait_answered(subs, timeout=60), stack.logs()
        ledger.recovered()
        await stack.settle()
        await stack.fill_ledger()
    assert_clean(ledger)
    assert ledger.delivered == 3 and ledger.reruns <= 3, ledger


@pytest.mark.timeout(150)
async def test_task_slower_than_min_idle(chaos, ledger):
    """Each prompt takes 6 s, MIN_IDLE_MS is 4 s, two workers: a healthy worker's long task must not
    be taken over (no second ComfyUI run, no second post)."""
    async with chaos(env={"MIN_IDLE_MS": "4000", "BLOCK_MS": "500"}, comfy_delay_s=6) as stack:
        await stack.start_default(workers=2)
        subs = await stack.send_telegram_photos(2)
        assert await stack.wait_answered(subs, timeout=90), stack.logs()
        await stack.settle()
        await stack.fill_ledger()
    assert_clean(ledger)
    assert ledger.reruns == 0, ledger
