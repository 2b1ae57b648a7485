"""The status command's light ComfyUI probe answers as ComfyUIClient does, against the fake."""

from __future__ import annotations

from backend.comfy_probe import ComfyProbe
from backend.comfyui import ComfyUIClient
from tests.support.redis_server import free_port


async def test_probe_agrees_with_the_client_on_health_and_queue(comfy_fake):
    probe, client = ComfyProbe(comfy_fake.url), ComfyUIClient(comfy_fake.url)
    await client.start()
    try:
        assert await probe.health() is True and await client.health() is True
        assert await probe.queue() == await client.queue() == ([], [])
    finally:
        await client.close()


async def test_probe_says_down_for_nothing_listening():
    assert await ComfyProbe(f"http://127.0.0.1:{free_port()}").health() is False
