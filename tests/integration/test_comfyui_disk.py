"""ComfyUI's disk stays bounded: N tasks leave at most one upload per slot in input/ and nothing in
output/ (the result comes over the WebSocket from SaveImageWebsocket)."""

from __future__ import annotations

from backend.replies import LoopbackReply
from tests.support.pipeline import running_pipeline
from tests.support.senders import RecordingSender

REPLY = LoopbackReply()


async def test_many_tasks_leave_no_pile_of_files(settings, photo_bytes, comfy_fake):
    sender = RecordingSender()
    tasks = 8
    async with running_pipeline(settings, {"test": sender}) as services:
        for n in range(tasks):
            await services.intake.submit(photo_bytes, mode="person", reply=REPLY, user=f"test:{n}")
        results = await sender.wait_for_results(tasks)
    assert all(r.status == "ok" for r in results)
    kinds = [kind for kind, _ in comfy_fake.files.files]
    assert kinds.count("output") == 0
    assert 1 <= kinds.count("input") <= settings.slots_per_instance < tasks
    classes = {node["class_type"] for body in comfy_fake.prompts.values() for node in body["prompt"].values()}
    assert "SaveImageWebsocket" in classes and "SaveImage" not in classes
    looked_up = [path for _, path in comfy_fake.requests if path.startswith("/history")]
    assert looked_up == [], "an image and a success that came over the socket need no /history call"


async def test_a_lost_socket_image_falls_back_to_a_file_once(comfy_fake, photo_bytes):
    """A stalled socket gets no image frame: the prompt runs again with SaveImage, read through /view."""
    import asyncio

    from backend.comfyui import ComfyUIClient
    from backend.settings import REPO_ROOT
    from backend.workflows import Workflows

    mode = Workflows.load(REPO_ROOT / "workflows").get("person")
    client = ComfyUIClient(comfy_fake.url, quiet_poll_s=0.3)
    await client.start()
    comfy_fake.stall_ws = True
    try:
        image, _ = await client.run(
            lambda name: mode.build(name, task_id="t1"),
            photo_bytes,
            "x.jpg",
            mode.output_node,
            prompt_id="p-1",
            deadline=asyncio.get_running_loop().time() + 30,
        )
    finally:
        await client.close()
    assert image.startswith(b"\x89PNG")
    assert [kind for kind, _ in comfy_fake.files.files].count("output") == 1


async def test_a_result_over_4_mb_comes_over_the_socket_in_one_run(comfy_fake):
    """aiohttp's default WebSocket limit (4 MB) is lifted: a big PNG result is one frame, not a re-run."""
    import asyncio
    import io
    import random

    from PIL import Image

    from backend.comfyui import ComfyUIClient
    from backend.settings import REPO_ROOT
    from backend.workflows import Workflows

    noise = Image.frombytes("L", (2000, 1500), random.Random(7).randbytes(2000 * 1500))  # PNG cannot shrink it
    buffer = io.BytesIO()
    noise.save(buffer, "PNG")
    mode = Workflows.load(REPO_ROOT / "workflows").get("person")
    client = ComfyUIClient(comfy_fake.url)
    await client.start()
    try:
        image, _ = await client.run(
            lambda name: mode.build(name, task_id="t1"),
            buffer.getvalue(),
            "x.png",
            mode.output_node,
            prompt_id="p-big",
            deadline=asyncio.get_running_loop().time() + 60,
        )
    finally:
        await client.close()
    assert len(image) > 4 * 1024 * 1024
    assert Image.open(io.BytesIO(image)).size == (2000, 1500)
    assert list(comfy_fake.prompts) == ["p-big"]  # no "-file" re-run
    assert [kind for kind, _ in comfy_fake.files.files].count("output") == 0
