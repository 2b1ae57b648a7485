"""The fake's DDColor node keeps its model per node instance, and /free acts when real ComfyUI does.

Real behaviour (main.py prompt_worker, kijai's nodes.py, PROTOCOL.md section 4): a checkpoint that
was missing leaves the node instance with a never-loaded network; /free's flags are read only after
the worker thread ran the next prompt it takes, so a prompt already queued runs on the stale node.
"""

from __future__ import annotations

import asyncio
import io

import aiohttp
import pytest
from PIL import Image

from tests.unit.test_comfyui_fake import messages_until_done, png, recording, upload

CHECKPOINT = "ddcolor_paper_tiny.pth"


def workflow(tag: str) -> dict:
    return {
        "1": {"class_type": "LoadImage", "inputs": {"image": "gray.png"}},
        "2": {
            "class_type": "DDColor_Colorize",
            "inputs": {"image": ["1", 0], "model_input_size": 256, "checkpoint": CHECKPOINT},
        },
        "3": {"class_type": "SaveImage", "inputs": {"images": ["2", 0], "filename_prefix": f"m/{tag}"}},
    }


@pytest.fixture
async def http():
    async with aiohttp.ClientSession() as session:
        yield session


async def queue(http, fake, tag: str) -> str:
    answer = await (await http.post(fake.url + "/prompt", json={"prompt": workflow(tag), "client_id": "m"})).json()
    return answer["prompt_id"]


async def outcome(http, fake, ws, prompt_id: str) -> str:
    """'error', 'grey' or 'colour' for a finished prompt."""
    messages = await messages_until_done(ws, prompt_id)
    if any(m["type"] == "execution_error" for m in messages):
        return "error"
    entry = (await (await http.get(f"{fake.url}/history/{prompt_id}")).json())[prompt_id]
    image = entry["outputs"]["3"]["images"][0]
    data = await (
        await http.get(fake.url + "/view", params={"filename": image["filename"], "subfolder": image["subfolder"]})
    ).read()
    red, _, blue = Image.open(io.BytesIO(data)).convert("RGB").getpixel((5, 5))
    return "colour" if red - blue > 10 else "grey"


async def test_missing_checkpoint_error_matches_recording(comfy_fake, http):
    rec = recording("12_ddcolor_missing_weights")
    recorded = next(
        e["json"]["data"] for e in rec["events"] if e["kind"] == "ws_text" and e["json"]["type"] == "execution_error"
    )
    comfy_fake.missing_checkpoints = {CHECKPOINT}
    await upload(http, comfy_fake, "gray.png", png())
    ws = await http.ws_connect(f"{comfy_fake.url}/ws?clientId=m")
    await ws.receive()
    prompt_id = await queue(http, comfy_fake, "a")
    error = next(m["data"] for m in await messages_until_done(ws, prompt_id) if m["type"] == "execution_error")
    assert (error["exception_type"], error["exception_message"], error["node_type"]) == (
        recorded["exception_type"],
        recorded["exception_message"],
        recorded["node_type"],
    )


async def test_node_stays_unloaded_until_free_even_with_the_file_back(comfy_fake, http):
    comfy_fake.missing_checkpoints = {CHECKPOINT}
    await upload(http, comfy_fake, "gray.png", png())
    ws = await http.ws_connect(f"{comfy_fake.url}/ws?clientId=m")
    await ws.receive()
    assert await outcome(http, comfy_fake, ws, await queue(http, comfy_fake, "a")) == "error"
    # still missing: the instance has its (random) network now, so the node "succeeds" grey
    assert await outcome(http, comfy_fake, ws, await queue(http, comfy_fake, "b")) == "grey"
    comfy_fake.missing_checkpoints = set()
    assert await outcome(http, comfy_fake, ws, await queue(http, comfy_fake, "c")) == "grey"
    await http.post(comfy_fake.url + "/free", json={"unload_models": True})  # models only: node kept
    assert await outcome(http, comfy_fake, ws, await queue(http, comfy_fake, "d")) == "grey"
    await http.post(comfy_fake.url + "/free", json={"unload_models": True, "free_memory": True})
    assert await outcome(http, comfy_fake, ws, await queue(http, comfy_fake, "e")) == "colour"


async def test_free_applies_only_after_the_next_queued_prompt_ran(comfy_fake, http):
    """The prefetch bug: A fails, B is already queued, /free arrives: B still runs on the stale node."""
    comfy_fake.missing_checkpoints = {CHECKPOINT}
    comfy_fake.delay_s = 0.3
    await upload(http, comfy_fake, "gray.png", png())
    ws = await http.ws_connect(f"{comfy_fake.url}/ws?clientId=m")
    await ws.receive()
    first = await queue(http, comfy_fake, "a")
    second = await queue(http, comfy_fake, "b")
    assert await outcome(http, comfy_fake, ws, first) == "error"
    comfy_fake.missing_checkpoints = set()
    await http.post(comfy_fake.url + "/free", json={"unload_models": True, "free_memory": True})
    third = await queue(http, comfy_fake, "c")
    assert await outcome(http, comfy_fake, ws, second) == "grey"  # taken before the flags were read
    assert await outcome(http, comfy_fake, ws, third) == "colour"
    assert comfy_fake.executor.frees_applied == 1


async def test_free_on_an_idle_server_applies_at_once(comfy_fake, http):
    comfy_fake.missing_checkpoints = {CHECKPOINT}
    await upload(http, comfy_fake, "gray.png", png())
    ws = await http.ws_connect(f"{comfy_fake.url}/ws?clientId=m")
    await ws.receive()
    assert await outcome(http, comfy_fake, ws, await queue(http, comfy_fake, "a")) == "error"
    comfy_fake.missing_checkpoints = set()
    await http.post(comfy_fake.url + "/free", json={"unload_models": True, "free_memory": True})
    for _ in range(100):
        if comfy_fake.executor.frees_applied:
            break
        await asyncio.sleep(0.01)
    assert comfy_fake.executor.frees_applied == 1 and comfy_fake.executor.objects == {}
    assert await outcome(http, comfy_fake, ws, await queue(http, comfy_fake, "b")) == "colour"
