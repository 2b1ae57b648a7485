"""backend.comfyui.ComfyUIClient against the ComfyUI fake: outcomes, errors, stalls, restarts."""

from __future__ import annotations

import asyncio
import io
import uuid

import pytest
from PIL import Image

from backend.comfyui import ComfyUIClient
from backend.errors import PermanentTaskError, TransientTaskError

WAIT_S = 20.0  # generous outer deadline; tests never assert on timing


def gray_png(size: tuple[int, int] = (80, 60), level: int = 120) -> bytes:
    buffer = io.BytesIO()
    Image.new("L", size, level).save(buffer, "PNG")
    return buffer.getvalue()


def colorize(image: str, *, checkpoint: str = "ddcolor_paper_tiny.pth", size: int = 256) -> dict:
    return {
        "1": {"class_type": "LoadImage", "inputs": {"image": image}},
        "2": {
            "class_type": "DDColor_Colorize",
            "inputs": {"image": ["1", 0], "model_input_size": size, "checkpoint": checkpoint},
        },
        "3": {"class_type": "SaveImage", "inputs": {"images": ["2", 0], "filename_prefix": "repairbot/out"}},
    }


def deadline(seconds: float = WAIT_S) -> float:
    return asyncio.get_running_loop().time() + seconds


def new_id() -> str:
    return f"test-{uuid.uuid4().hex}"


@pytest.fixture
async def client(comfy_fake):
    comfy = ComfyUIClient(comfy_fake.url, quiet_poll_s=0.3, request_timeout_s=5.0)
    await comfy.start()
    yield comfy
    await comfy.close()


async def wait_until(condition, timeout: float = WAIT_S) -> None:
    async with asyncio.timeout(timeout):
        while not condition():
            await asyncio.sleep(0.01)


async def test_run_returns_tinted_png_and_reports_progress(comfy_fake, client):
    progress, queued = [], []

    async def on_queued():
        queued.append(True)

    result, gpu_ms = await client.run(
        colorize,
        gray_png(),
        "repairbot-t1-1.png",
        "3",
        prompt_id=new_id(),
        deadline=deadline(),
        on_progress=progress.append,
        on_queued=on_queued,
    )
    assert gpu_ms >= 0
    image = Image.open(io.BytesIO(result))
    red, green, blue = image.convert("RGB").getpixel((5, 5))
    assert image.size == (80, 60) and red > green > blue
    assert queued == [True]
    assert progress and progress == sorted(progress) and progress[-1] >= 66
    body = next(iter(comfy_fake.prompts.values()))
    assert body["client_id"] == client.client_id
    assert client.client_id.startswith("repairbot-")


async def test_events_before_the_http_answer_are_not_lost(comfy_fake):
    # /history polling is pushed past the deadline: only the socket's own events can finish this wait
    client = ComfyUIClient(comfy_fake.url, quiet_poll_s=120, request_timeout_s=5.0)
    await client.start()
    try:
        await wait_until(lambda: client.connected)
        value = await client.upload_image(gray_png(), "early.png")
        prompt_id = new_id()
        await client.queue_prompt(colorize(value), prompt_id)
        await wait_until(lambda: prompt_id in comfy_fake.history)  # done before we even start waiting
        entry = await client.wait_for(prompt_id, deadline=deadline(10))
        assert entry["outputs"]["3"]["images"][0]["subfolder"] == "repairbot"
    finally:
        await client.close()


async def test_queue_lists_ids_and_both_cancellations_end_as_cancelled(comfy_fake, client):
    comfy_fake.delay_s = 1.0
    value = await client.upload_image(gray_png(), "q.png")
    assert value == "q.png"
    ids = [new_id(), new_id()]
    for prompt_id, size in zip(ids, (256, 288)):
        await client.queue_prompt(colorize(value, size=size), prompt_id)
    running, pending = await client.queue()
    assert running == ids[:1] and pending == ids[1:]
    assert "LoadImage" in await client.object_info()
    await client.delete_queued(ids[1])
    await client.interrupt(ids[0])
    with pytest.raises(PermanentTaskError) as first:
        await client.wait_for(ids[0], deadline=deadline())
    assert first.value.code == "cancelled"
    with pytest.raises(PermanentTaskError) as second:
        await client.wait_for(ids[1], deadline=deadline())
    assert second.value.code == "cancelled"


async def test_validation_error_is_rejected_with_readable_detail(comfy_fake, client):
    with pytest.raises(PermanentTaskError) as caught:
        await client.run(
            lambda v: colorize(v, checkpoint="ddcolor_v9.pth"),
            gray_png(),
            "bad.png",
            "3",
            prompt_id=new_id(),
            deadline=deadline(),
        )
    assert caught.value.code == "comfyui_rejected"
    assert "node 2 (DDColor_Colorize): Value not in list: checkpoint: 'ddcolor_v9.pth'" in caught.value.detail
    assert comfy_fake.prompts == {}


async def test_unknown_node_class_is_rejected(client):
    workflow = {"1": {"class_type": "NoSuchNode", "inputs": {}}}
    with pytest.raises(PermanentTaskError) as caught:
        await client.queue_prompt(workflow, new_id())
    assert caught.value.code == "comfyui_rejected"
    assert "Cannot execute because node NoSuchNode does not exist." in caught.value.detail


async def test_runtime_error_is_comfyui_failed(comfy_fake, client):
    comfy_fake.fail_next_runtime = "CUDA out of memory"
    with pytest.raises(PermanentTaskError) as caught:
        await client.run(colorize, gray_png(), "oom.png", "3", prompt_id=new_id(), deadline=deadline())
    assert caught.value.code == "comfyui_failed"
    assert caught.value.detail.startswith("RuntimeError: CUDA out of memory")


async def test_bad_model_input_size_is_comfyui_failed(client):
    with pytest.raises(PermanentTaskError) as caught:
        await client.run(
            lambda v: colorize(v, size=100), gray_png(), "s100.png", "3", prompt_id=new_id(), deadline=deadline()
        )
    assert caught.value.code == "comfyui_failed"
    assert "Sizes of tensors must match" in caught.value.detail


async def test_interrupt_while_running_is_cancelled(comfy_fake, client):
    comfy_fake.delay_s = 1.0
    prompt_id = new_id()

    async def interrupt_when_queued():
        await client.interrupt(prompt_id)

    with pytest.raises(PermanentTaskError) as caught:
        await client.run(
            colorize,
            gray_png(),
            "int.png",
            "3",
            prompt_id=prompt_id,
            deadline=deadline(),
            on_queued=interrupt_when_queued,
        )
    assert caught.value.code == "cancelled"


async def test_stopped_fake_is_transient(comfy_fake, client):
    await comfy_fake.stop()
    assert await client.health() is False
    with pytest.raises(TransientTaskError) as caught:
        await client.run(colorize, gray_png(), "down.png", "3", prompt_id=new_id(), deadline=deadline())
    assert caught.value.code == "comfyui_unavailable"
    await comfy_fake.start()
    assert await client.health() is True


async def test_http_500_is_transient(comfy_fake, client):
    comfy_fake.http_500 = True
    with pytest.raises(TransientTaskError) as caught:
        await client.upload_image(gray_png(), "x.png")
    assert caught.value.code == "comfyui_unavailable"


async def test_stalled_socket_still_completes_through_history(comfy_fake, client):
    await wait_until(lambda: client.connected)
    comfy_fake.stall_ws = True
    result, _ = await client.run(colorize, gray_png(), "stall.png", "3", prompt_id=new_id(), deadline=deadline())
    assert Image.open(io.BytesIO(result)).size == (80, 60)  # no socket event ever said "done"


async def test_restart_mid_wait_ends_without_hanging(comfy_fake, client):
    comfy_fake.delay_s = 2.0
    prompt_id = new_id()
    task = asyncio.create_task(
        client.run(colorize, gray_png(), "restart.png", "3", prompt_id=prompt_id, deadline=deadline())
    )
    await wait_until(lambda: comfy_fake.executor.running is not None)
    await comfy_fake.stop()
    await comfy_fake.start()
    with pytest.raises(TransientTaskError) as caught:
        await task
    assert caught.value.code == "comfyui_unavailable"  # the restarted server forgot the prompt


async def test_deadline_passed_is_timeout(comfy_fake, client):
    comfy_fake.delay_s = 3.0
    with pytest.raises(TransientTaskError) as caught:
        await client.run(colorize, gray_png(), "slow.png", "3", prompt_id=new_id(), deadline=deadline(0.3))
    assert caught.value.code == "timeout"
    comfy_fake.delay_s = 0.0


async def test_socket_reconnects_after_a_drop_and_keeps_one_registration(comfy_fake, client):
    await wait_until(lambda: client.client_id in comfy_fake.hub.sockets)
    old = comfy_fake.hub.sockets[client.client_id]
    await old.close()
    await wait_until(lambda: comfy_fake.hub.sockets.get(client.client_id) not in (None, old))
    result, _ = await client.run(colorize, gray_png(), "again.png", "3", prompt_id=new_id(), deadline=deadline())
    assert bytes(result[:8]) == b"\x89PNG\r\n\x1a\n"  # a view into the socket frame, not a copy
    await client.free()
    assert ("POST", "/free") in comfy_fake.requests


async def test_started_is_reported_when_comfyui_begins_not_while_the_prompt_waits(comfy_fake, client):
    comfy_fake.delay_s = 0.5
    await wait_until(lambda: client.connected)
    first_id, second_id = new_id(), new_id()
    seen_when_second_started: list[bool] = []

    async def second_started() -> None:
        seen_when_second_started.append(first_id in comfy_fake.executor.history)

    first = asyncio.create_task(
        client.run(colorize, gray_png(), "first.png", "3", prompt_id=first_id, deadline=deadline())
    )
    await wait_until(lambda: comfy_fake.executor.running is not None)
    await client.run(
        colorize,
        gray_png(level=90),
        "second.png",
        "3",
        prompt_id=second_id,
        deadline=deadline(),
        on_started=second_started,
    )
    await first
    assert seen_when_second_started == [True]  # it waited behind the first before it "started"
