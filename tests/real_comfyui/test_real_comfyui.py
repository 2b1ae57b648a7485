"""Opt-in: the whole flow against a real ComfyUI with kijai's DDColor node and a checkpoint.

    REPAIRBOT_REAL_COMFYUI=http://127.0.0.1:8188 python3 -m pytest -q tests/real_comfyui

Skipped unless REPAIRBOT_REAL_COMFYUI is set, so CI (which has no ComfyUI) never runs it. On a CPU
the first prompt builds the network and loads the checkpoint: allow a few minutes. Without access to
the hub, `make_random_checkpoint.py` beside this file makes a checkpoint for `--weights`.
"""

from __future__ import annotations

import io
import os

import pytest
from PIL import Image

from backend import comfyui_doctor, stale_model
from backend.comfyui import ComfyUIClient
from backend.replies import LoopbackReply
from backend.services import Services
from tests.support.pipeline import running_pipeline
from tests.support.senders import RecordingSender

REAL = os.environ.get("REPAIRBOT_REAL_COMFYUI", "").rstrip("/")
pytestmark = [
    pytest.mark.skipif(not REAL, reason="set REPAIRBOT_REAL_COMFYUI=http://host:port to run against a real ComfyUI"),
    pytest.mark.timeout(1800),
]


@pytest.fixture
def real_settings(settings):
    return settings.model_copy(update={"comfyui_url": [REAL], "task_timeout_s": 1500, "comfyui_quiet_poll_s": 5.0})


async def test_the_real_comfyui_has_the_ddcolor_node():
    client = ComfyUIClient(REAL)
    try:
        assert await client.health(), f"no ComfyUI answers at {REAL}"
        info = await client.object_info()
    finally:
        await client.close()
    assert "DDColor_Colorize" in info and "SaveImageWebsocket" in info


async def test_a_photo_comes_back_colorized_and_the_same_size(real_settings, photo_bytes):
    sender = RecordingSender()
    async with running_pipeline(real_settings, {"test": sender}) as services:
        await services.intake.submit(photo_bytes, mode="person", reply=LoopbackReply(), user="test:real")
        [result] = await sender.wait_for_results(1, timeout=1500)
        assert result.status == "ok", result
        output = await services.blobs.get(result.output)
    assert Image.open(io.BytesIO(output)).size == Image.open(io.BytesIO(photo_bytes)).size
    assert stale_model.chroma(output) > stale_model.GREY_OUTPUT_MAX, "DDColor gave a grey image"
    print(f"person mode on the real ComfyUI: {result.run_ms / 1000:.1f} s")


async def test_doctor_probe_passes(real_settings):
    lines: list[tuple[bool, str]] = []
    services = Services.create(real_settings)
    client = ComfyUIClient(REAL)
    try:
        await comfyui_doctor.probe_all(client, services.workflows.modes, lambda ok, line: lines.append((ok, line)))
    finally:
        await client.close()
        await services.close()
    print("\n".join(line for _, line in lines))
    assert lines and all(ok for ok, _ in lines), lines
