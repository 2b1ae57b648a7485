"""The ComfyUI fake against the recordings of the real server (tests/data/comfyui/recordings)."""

from __future__ import annotations

import asyncio
import base64
import io
import json
from pathlib import Path

import aiohttp
import pytest
from PIL import Image

RECORDINGS = Path(__file__).resolve().parents[1] / "data" / "comfyui" / "recordings"
BASIC_WORKFLOW = json.loads((RECORDINGS / "01_basic_success.json").read_text())["workflow"]


def recording(name: str) -> dict:
    return json.loads((RECORDINGS / f"{name}.json").read_text())


def recorded_upload(rec: dict) -> tuple[str, bytes]:
    event = next(e for e in rec["events"] if e["kind"] == "http_request" and e["path"] == "/upload/image")
    part = next(p for p in event["multipart"] if p["name"] == "image")
    return part["filename"], base64.b64decode(part["file"]["base64"])


def strip_tracebacks(value):
    if isinstance(value, dict):
        return {k: strip_tracebacks(v) for k, v in value.items() if k != "traceback"}
    if isinstance(value, list):
        return [strip_tracebacks(v) for v in value]
    return value


def png(gray: int = 128, size: tuple[int, int] = (64, 48)) -> bytes:
    buffer = io.BytesIO()
    Image.new("L", size, gray).save(buffer, "PNG")
    return buffer.getvalue()


@pytest.fixture
async def http():
    async with aiohttp.ClientSession() as session:
        yield session


async def upload(http, fake, name: str, data: bytes, **fields) -> aiohttp.ClientResponse:
    form = aiohttp.FormData()
    form.add_field("image", data, filename=name, content_type="image/png")
    for key, value in fields.items():
        form.add_field(key, value)
    return await http.post(fake.url + "/upload/image", data=form)


async def messages_until_done(ws, prompt_id: str, timeout: float = 10.0) -> list[dict]:
    """Every text message up to and including executing{node: null} for prompt_id."""
    seen = []
    async with asyncio.timeout(timeout):
        while True:
            msg = await ws.receive()
            if msg.type != aiohttp.WSMsgType.TEXT:
                continue
            seen.append(json.loads(msg.data))
            data = seen[-1]["data"]
            if seen[-1]["type"] == "executing" and data.get("node") is None and data.get("prompt_id") == prompt_id:
                return seen


def shape(messages: list[dict]) -> list[tuple]:
    """Type plus the parts that don't change between runs (node ids and progress states)."""
    out = []
    for m in messages:
        data = m["data"]
        if m["type"] == "progress_state":
            out.append(("progress_state", tuple((n, s["state"], s["value"]) for n, s in data["nodes"].items())))
        elif m["type"] == "status":
            out.append(("status", data["status"]["exec_info"]["queue_remaining"]))
        else:
            out.append((m["type"], data.get("node"), tuple(data.get("nodes", ()))))
    return out


def recorded_ws(rec: dict, label: str, prompt_id: str) -> list[dict]:
    texts = [e["json"] for e in rec["events"] if e["kind"] == "ws_text" and e.get("label") == label]
    start = (
        next(i for i, m in enumerate(texts) if m["type"] == "execution_start" and m["data"]["prompt_id"] == prompt_id)
        - 2
    )  # the two status messages of enqueueing
    end = next(
        i
        for i, m in enumerate(texts)
        if m["type"] == "executing" and m["data"].get("node") is None and m["data"].get("prompt_id") == prompt_id
    )
    return texts[start : end + 1]


async def test_validation_errors_match_recordings(comfy_fake, http):
    name, data = recorded_upload(recording("04_invalid_unknown_class"))
    assert (await upload(http, comfy_fake, name, data)).status == 200
    compared = 0
    for rec_name in (
        "04_invalid_unknown_class",
        "05_invalid_missing_input",
        "06_invalid_bad_image_name",
        "07_invalid_misc",
    ):
        events = recording(rec_name)["events"]
        for request in events:
            if request["kind"] != "http_request" or request["path"] != "/prompt" or request["method"] != "POST":
                continue
            response = next(e for e in events if e["kind"] == "http_response" and e.get("label") == request["label"])
            if response["status"] != 400:
                continue
            got = await http.post(
                comfy_fake.url + "/prompt", data=request["body_text"], headers={"Content-Type": "application/json"}
            )
            body = await got.text()
            assert got.status == 400, request["label"]
            assert strip_tracebacks(json.loads(body)) == strip_tracebacks(response["body_json"]), request["label"]
            if "traceback" not in body:
                assert body == response["body_text"], request["label"]  # byte for byte
            compared += 1
    assert compared == 17


async def test_partial_success_and_coercion_match_recording(comfy_fake, http):
    rec = recording("07_invalid_misc")
    name, data = recorded_upload(rec)
    await upload(http, comfy_fake, name, data)
    request = next(e for e in rec["events"] if e.get("label") == "two_outputs_one_invalid_partial_success")
    expected = next(
        e
        for e in rec["events"]
        if e["kind"] == "http_response" and e.get("label") == "two_outputs_one_invalid_partial_success"
    )
    answer = await (await http.post(comfy_fake.url + "/prompt", json=request["body_json"])).json()
    assert answer["node_errors"] == expected["body_json"]["node_errors"]
    assert comfy_fake.prompts[answer["prompt_id"]]["prompt"]["4"]  # queued anyway

    coerced = next(e for e in rec["events"] if e.get("label") == "string_number_is_coerced")["body_json"]
    answer = await (await http.post(comfy_fake.url + "/prompt", json=coerced)).json()
    assert answer["node_errors"] == {}
    queued = comfy_fake.prompts[answer["prompt_id"]]["prompt"]
    assert queued["2"]["inputs"]["width"] == 120


async def test_no_prompt_and_malformed_json(comfy_fake, http):
    got = await http.post(comfy_fake.url + "/prompt", json={"client_id": "x", "extra_data": {}})
    assert got.status == 400
    assert (await got.json())["error"]["type"] == "no_prompt"
    got = await http.post(comfy_fake.url + "/prompt", data="{not json", headers={"Content-Type": "application/json"})
    assert got.status == 500
    assert await got.text() == "500 Internal Server Error\n\nServer got itself in trouble"


async def test_success_run_messages_match_recording(comfy_fake, http):
    rec = recording("01_basic_success")
    name, data = recorded_upload(rec)
    ws = await http.ws_connect(f"{comfy_fake.url}/ws?clientId={rec['client_id']}")
    hello = json.loads((await ws.receive()).data)
    assert hello == {
        "type": "status",
        "data": {"status": {"exec_info": {"queue_remaining": 0}}, "sid": rec["client_id"]},
    }
    await upload(http, comfy_fake, name, data, overwrite="true")
    queued = await http.post(
        comfy_fake.url + "/prompt", json={"prompt": rec["workflow"], "client_id": rec["client_id"]}
    )
    answer = await queued.json()
    assert answer["number"] == 0 and answer["node_errors"] == {}
    got = await messages_until_done(ws, answer["prompt_id"])
    assert shape(got) == shape(recorded_ws(rec, "owner", rec["prompt_id"]))

    history = await (await http.get(f"{comfy_fake.url}/history/{answer['prompt_id']}")).json()
    entry = history[answer["prompt_id"]]
    assert list(entry) == ["prompt", "outputs", "status", "meta"]
    assert entry["outputs"] == {
        "3": {"images": [{"filename": "basic_00001_.png", "subfolder": "recording", "type": "output"}]}
    }
    assert [m[0] for m in entry["status"]["messages"]] == ["execution_start", "execution_cached", "execution_success"]
    view = await http.get(
        comfy_fake.url + "/view", params={"filename": "basic_00001_.png", "subfolder": "recording", "type": "output"}
    )
    assert view.headers["Content-Type"] == "image/png"
    assert view.headers["Content-Disposition"] == 'filename="basic_00001_.png"'
    image = Image.open(io.BytesIO(await view.read()))
    assert (image.mode, image.size) == ("RGB", (128, 96))
    assert json.loads(image.text["prompt"])["3"]["class_type"] == "SaveImage"
    await ws.close()


async def test_cached_resubmit_replays_old_files(comfy_fake, http):
    rec = recording("02_cached_resubmit")
    name, data = recorded_upload(rec)
    await upload(http, comfy_fake, name, data)
    ws = await http.ws_connect(f"{comfy_fake.url}/ws?clientId=c1")
    await ws.receive()
    runs = []
    for _ in range(2):
        answer = await (
            await http.post(comfy_fake.url + "/prompt", json={"prompt": BASIC_WORKFLOW, "client_id": "c1"})
        ).json()
        runs.append(await messages_until_done(ws, answer["prompt_id"]))
    second = recorded_ws(rec, "owner", rec["prompt_ids"][1])
    assert shape(runs[1]) == shape(second)
    assert [f for k, f in comfy_fake.files.files if k == "output"] == ["recording/basic_00001_.png"]

    changed = json.loads(json.dumps(BASIC_WORKFLOW))
    changed["2"]["inputs"]["width"] = 100
    answer = await (await http.post(comfy_fake.url + "/prompt", json={"prompt": changed, "client_id": "c1"})).json()
    partial = await messages_until_done(ws, answer["prompt_id"])
    assert shape(partial) == shape(recorded_ws(rec, "owner", rec["prompt_ids"][2]))
    await ws.close()


async def test_runtime_error_from_garbage_upload(comfy_fake, http):
    rec = recording("08_runtime_error")
    name, data = recorded_upload(rec)
    await upload(http, comfy_fake, name, data)
    ws = await http.ws_connect(f"{comfy_fake.url}/ws?clientId=c8")
    await ws.receive()
    answer = await (
        await http.post(comfy_fake.url + "/prompt", json={"prompt": rec["workflow"], "client_id": "c8"})
    ).json()
    got = await messages_until_done(ws, answer["prompt_id"])
    assert shape(got) == shape(recorded_ws(rec, "owner", rec["prompt_id"]))
    error = got[-3]["data"]
    assert error["exception_type"] == "PIL.UnidentifiedImageError"
    assert error["exception_message"] == "cannot identify image file '<COMFYUI_ROOT>/input/rec_corrupt.png'\n"
    assert error["current_inputs"] == {"image": ["rec_corrupt.png"]}
    entry = (await (await http.get(f"{comfy_fake.url}/history/{answer['prompt_id']}")).json())[answer["prompt_id"]]
    assert entry["status"]["status_str"] == "error" and entry["status"]["completed"] is False
    assert entry["status"]["messages"][-1][0] == "execution_error"
    assert entry["outputs"] == {} and entry["meta"] == {}


async def test_ddcolor_size_not_multiple_of_32_fails_at_run_time(comfy_fake, http):
    rec = recording("18_ddcolor_model_input_size_not_multiple_of_32")
    recorded_errors = [
        e["json"]["data"]["exception_message"]
        for e in rec["events"]
        if e["kind"] == "ws_text" and e["json"]["type"] == "execution_error"
    ]
    await upload(http, comfy_fake, "gray.png", png(size=(333, 201)))
    ws = await http.ws_connect(f"{comfy_fake.url}/ws?clientId=c18")
    await ws.receive()
    errors = []
    for size in (100, 288, 48):
        workflow = {
            "1": {"class_type": "LoadImage", "inputs": {"image": "gray.png"}},
            "2": {
                "class_type": "DDColor_Colorize",
                "inputs": {"image": ["1", 0], "model_input_size": size, "checkpoint": "ddcolor_paper_tiny.pth"},
            },
            "3": {"class_type": "SaveImage", "inputs": {"images": ["2", 0], "filename_prefix": f"dd/s{size}"}},
        }
        answer = await (
            await http.post(comfy_fake.url + "/prompt", json={"prompt": workflow, "client_id": "c18"})
        ).json()
        got = await messages_until_done(ws, answer["prompt_id"])
        errors += [m["data"]["exception_message"] for m in got if m["type"] == "execution_error"]
    assert errors == recorded_errors
    view = await http.get(comfy_fake.url + "/view", params={"filename": "s288_00001_.png", "subfolder": "dd"})
    red, green, blue = Image.open(io.BytesIO(await view.read())).getpixel((10, 10))
    assert (red, green, blue) == (128, 109, 77)  # the fixed tint: grey came back warm
    assert Image.open(io.BytesIO(await view.read())).size == (333, 201)


async def test_upload_renaming(comfy_fake, http):
    first, second = png(100), png(200)
    assert await (await upload(http, comfy_fake, "a.png", first)).json() == {
        "name": "a.png",
        "subfolder": "",
        "type": "input",
    }
    assert (await (await upload(http, comfy_fake, "a.png", first)).json())["name"] == "a.png"
    assert (await (await upload(http, comfy_fake, "a.png", second)).json())["name"] == "a (1).png"
    assert (await (await upload(http, comfy_fake, "a.png", second)).json())["name"] == "a (1).png"
    assert (await (await upload(http, comfy_fake, "a.png", second, overwrite="true")).json())["name"] == "a.png"
    sub = await (await upload(http, comfy_fake, "b.png", first, subfolder="bot")).json()
    assert sub == {"name": "b.png", "subfolder": "bot", "type": "input"}
    garbage = await upload(http, comfy_fake, "junk.png", b"not a png at all")
    assert garbage.status == 200
    form = aiohttp.FormData()
    form.add_field("overwrite", "true")
    missing = await http.post(comfy_fake.url + "/upload/image", data=form)
    assert missing.status == 400 and "Content-Type" not in missing.headers
    info = await (await http.get(comfy_fake.url + "/object_info/LoadImage")).json()
    assert info["LoadImage"]["input"]["required"]["image"][0] == ["a (1).png", "a.png", "bot/b.png", "junk.png"]


async def test_view_guards_and_info_routes(comfy_fake, http):
    url = comfy_fake.url
    assert (await http.get(url + "/view", params={"filename": "nope.png"})).status == 404
    assert (await http.get(url + "/view", params={"filename": "../secret.png"})).status == 400
    assert (await http.get(url + "/view", params={"filename": "x.png", "type": "bogus"})).status == 400
    assert (await http.get(url + "/view", params={"filename": "x.png", "subfolder": "../.."})).status == 403
    assert await (await http.get(url + "/history/not-a-real-id")).text() == "{}"
    assert await (await http.get(url + "/api/queue")).text() == '{"queue_running": [], "queue_pending": []}'
    assert await (await http.get(url + "/prompt")).json() == {"exec_info": {"queue_remaining": 0}}
    assert await (await http.get(url + "/object_info/NoSuchNode")).json() == {}
    assert (await (await http.get(url + "/system_stats")).json())["system"]["comfyui_version"] == "0.3.64"
    assert (await http.get(url + "/features")).status == 200
    cross = await http.post(url + "/prompt", json={"prompt": {}}, headers={"Origin": "http://other-site.example"})
    assert cross.status == 403
    free = await http.post(url + "/free", json={"unload_models": True, "free_memory": True})
    assert free.status == 200 and "Content-Type" not in free.headers
    comfy_fake.http_500 = True
    assert (await http.get(url + "/queue")).status == 500
    assert ("GET", "/api/queue") in comfy_fake.requests


async def test_prompt_without_client_id_sends_no_executing(comfy_fake, http):
    await upload(http, comfy_fake, "rec_basic_gray.png", png())
    ws = await http.ws_connect(f"{comfy_fake.url}/ws?clientId=watcher")
    await ws.receive()
    answer = await (await http.post(comfy_fake.url + "/prompt", json={"prompt": BASIC_WORKFLOW})).json()
    seen = []
    async with asyncio.timeout(10):
        while not (await http.get(f"{comfy_fake.url}/history/{answer['prompt_id']}")).content_length > 2:
            await asyncio.sleep(0.02)
    async with asyncio.timeout(10):
        while True:  # the final status broadcast ends the prompt for a watcher
            seen.append(json.loads((await ws.receive()).data))
            if seen[-1]["type"] == "status" and seen[-1]["data"]["status"]["exec_info"]["queue_remaining"] == 0:
                break
    assert {m["type"] for m in seen} == {"status", "progress_state"}
    entry = (await (await http.get(f"{comfy_fake.url}/history/{answer['prompt_id']}")).json())[answer["prompt_id"]]
    assert entry["prompt"][3] == {}


async def test_same_client_id_twice_loses_the_registration(comfy_fake, http):
    await upload(http, comfy_fake, "rec_basic_gray.png", png())
    first = await http.ws_connect(f"{comfy_fake.url}/ws?clientId=twin")
    await first.receive()
    second = await http.ws_connect(f"{comfy_fake.url}/ws?clientId=twin")
    await second.receive()
    await first.close()
    async with asyncio.timeout(5):
        while "twin" in comfy_fake.hub.sockets:
            await asyncio.sleep(0.01)
    answer = await (
        await http.post(comfy_fake.url + "/prompt", json={"prompt": BASIC_WORKFLOW, "client_id": "twin"})
    ).json()
    async with asyncio.timeout(10):
        while not comfy_fake.history.get(answer["prompt_id"]):
            await asyncio.sleep(0.02)
    with pytest.raises(TimeoutError):
        await second.receive(timeout=0.2)  # ran, yet the orphaned socket heard nothing at all
    await second.close()


async def test_queue_delete_and_interrupt(comfy_fake, http):
    comfy_fake.delay_s = 0.6
    await upload(http, comfy_fake, "rec_basic_gray.png", png())
    ws = await http.ws_connect(f"{comfy_fake.url}/ws?clientId=q")
    await ws.receive()
    ids = []
    for width in (10, 11, 12):
        workflow = json.loads(json.dumps(BASIC_WORKFLOW))
        workflow["2"]["inputs"]["width"] = width
        answer = await (await http.post(comfy_fake.url + "/prompt", json={"prompt": workflow, "client_id": "q"})).json()
        ids.append(answer["prompt_id"])
    queue = await (await http.get(comfy_fake.url + "/queue")).json()
    assert [item[1] for item in queue["queue_running"]] == ids[:1]
    assert sorted(item[1] for item in queue["queue_pending"]) == sorted(ids[1:])
    assert (await http.post(comfy_fake.url + "/queue", json={"delete": [ids[2]]})).status == 200
    await http.post(comfy_fake.url + "/interrupt", json={"prompt_id": ids[1]})  # not running: ignored
    await http.post(comfy_fake.url + "/interrupt", json={"prompt_id": ids[0]})
    first = await messages_until_done(ws, ids[0])
    interrupted = [m for m in first if m["type"] == "execution_interrupted"]
    assert len(interrupted) == 1 and interrupted[0]["data"]["prompt_id"] == ids[0]
    assert [m["type"] for m in first[-3:]] == ["execution_interrupted", "status", "executing"]
    comfy_fake.delay_s = 0
    second = await messages_until_done(ws, ids[1])
    assert "execution_success" in [m["type"] for m in second]
    assert await (await http.get(f"{comfy_fake.url}/history/{ids[2]}")).json() == {}
    entry = comfy_fake.history[ids[0]]
    assert entry["status"]["status_str"] == "error"
    assert entry["status"]["messages"][-1][0] == "execution_interrupted"


async def test_restart_comes_back_on_the_same_port_empty(comfy_fake, http):
    await upload(http, comfy_fake, "rec_basic_gray.png", png())
    answer = await (await http.post(comfy_fake.url + "/prompt", json={"prompt": BASIC_WORKFLOW})).json()
    url = comfy_fake.url
    await comfy_fake.stop()
    with pytest.raises(aiohttp.ClientConnectionError):
        await http.get(url + "/queue")
    await comfy_fake.start()
    assert comfy_fake.url == url
    assert await (await http.get(f"{url}/history/{answer['prompt_id']}")).json() == {}
    info = await (await http.get(url + "/object_info/LoadImage")).json()
    assert info["LoadImage"]["input"]["required"]["image"][0] == ["rec_basic_gray.png"]  # files survive
