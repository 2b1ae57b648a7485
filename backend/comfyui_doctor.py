"""What `repairbot doctor` checks about the DDColor checkpoints, and `doctor --probe`.

Without --probe: every checkpoint a mode uses that the node lists must also be loadable. ComfyUI's
API shows the files only for nodes that register a model folder (hay86's pack: `/models/ddcolor`);
kijai's node reads its own `checkpoints/` folder, which only our own install lets us look into.

With --probe: each mode runs on a small generated grey image; the output must decode, have the size
the workflow gives it, and, for a colorizing mode, have colour. A failure says what to do.
"""

from __future__ import annotations

import asyncio
import io
import json
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from PIL import Image, ImageDraw

from backend import stale_model
from backend.comfyui_install import Layout
from backend.errors import RepairError

Report = Callable[[bool, str], None]
PROBE_SIZE = (160, 120)
PROBE_TIMEOUT_S = 900.0  # a cold CPU start builds the network and loads ~1 GB first


def checkpoints_of(mode: Any) -> list[str]:
    return [
        node["inputs"]["checkpoint"]
        for node in mode.build("probe.png", task_id="doctor").values()
        if node.get("class_type") in stale_model.COLORIZING_NODES and isinstance(node["inputs"].get("checkpoint"), str)
    ]


async def check_checkpoints(
    client: Any,
    modes: dict[str, Any],
    report: Report,
    *,
    comfyui_port: int = 8188,
    comfyui_dir: Path = Path("var/comfyui"),
    comfyui_python: Path | None = None,
) -> None:
    """Flag a checkpoint the node lists (so validation passes) but that is not there to load.

    When ComfyUI does not list its model folder and `client` is the install `repairbot up` runs (on
    loopback at `comfyui_port`, installed in `comfyui_dir` for `comfyui_python`), the files are looked at.
    """
    wanted = sorted({name for mode in modes.values() for name in checkpoints_of(mode)})
    if not wanted:
        return
    listed = await _model_folder(client, "ddcolor")
    local = _own_install(client.base_url, comfyui_port, comfyui_dir, comfyui_python)
    for name in wanted:
        if listed is not None:
            report(
                name in listed,
                f"  checkpoint {name}: "
                + (
                    "in ComfyUI's models/ddcolor"
                    if name in listed
                    else "listed by the node but not in ComfyUI's models/ddcolor: it cannot load; run `repairbot "
                    "comfyui install` or copy it there, then restart ComfyUI"
                ),
            )
        elif local is not None:
            path = local.checkpoints / name
            there = path.is_file() and path.stat().st_size > 0
            report(
                there,
                f"  checkpoint {name}: "
                + (
                    f"{path} ({path.stat().st_size / 1e6:.0f} MB)"
                    if there
                    else f"listed by the node but {path} is missing: it cannot load; run `repairbot comfyui install` "
                    "(or --weights PATH), then restart ComfyUI or POST /free"
                ),
            )
        else:
            print(f"     checkpoint {name}: this ComfyUI doesn't show the node's files; `doctor --probe` loads it")


async def _model_folder(client: Any, folder: str) -> list[str] | None:
    """GET /models/{folder}: the files ComfyUI sees there, or None when it has no such folder."""
    try:
        status, body = await client._request("GET", f"/models/{folder}")
    except RepairError:
        return None
    if status != 200:
        return None
    try:
        listed = json.loads(body)
    except ValueError:
        return None
    return [str(name) for name in listed] if isinstance(listed, list) else None


def _own_install(base_url: str, comfyui_port: int, comfyui_dir: Path, comfyui_python: Path | None) -> Layout | None:
    """The install `repairbot up` runs, when `base_url` is that ComfyUI (loopback, COMFYUI_PORT)."""
    parts = urlsplit(base_url)
    if parts.hostname not in ("127.0.0.1", "localhost", "::1") or (parts.port or 80) != comfyui_port:
        return None
    layout = Layout(Path(comfyui_dir).resolve(), comfyui_python)
    return layout if (layout.comfyui / "main.py").exists() else None


# --- --probe -------------------------------------------------------------------------------------
def probe_image(size: tuple[int, int] = PROBE_SIZE) -> bytes:
    """A small grey test card: a gradient with shapes, so a colorizer has something to colour."""
    width, height = size
    image = Image.linear_gradient("L").resize(size)
    draw = ImageDraw.Draw(image)
    draw.ellipse((width // 5, height // 5, width // 2, height * 4 // 5), fill=200)
    draw.rectangle((width * 3 // 5, height // 4, width * 9 // 10, height * 3 // 4), fill=60)
    buffer = io.BytesIO()
    image.convert("RGB").save(buffer, "PNG")
    return buffer.getvalue()


def expected_size(workflow: dict[str, Any], size: tuple[int, int]) -> tuple[int, int]:
    """The size the workflow's core scaling nodes give; DDColor keeps the input's size."""
    width, height = size
    for node in workflow.values():
        inputs = node.get("inputs", {})
        if node.get("class_type") == "ImageScaleBy":
            width, height = max(1, round(width * inputs["scale_by"])), max(1, round(height * inputs["scale_by"]))
        elif node.get("class_type") == "ImageScale" and (inputs.get("width") or inputs.get("height")):
            new_w, new_h = inputs.get("width") or 0, inputs.get("height") or 0
            width, height = (
                new_w or max(1, round(width * new_h / height)),
                new_h or max(1, round(height * new_w / width)),
            )
    return width, height


def probe_params(mode: Any) -> dict[str, Any]:
    """The smallest model_input_size a mode allows: the probe checks the model, not the resolution."""
    param = mode.params.get("model_input_size")
    if param is not None and param.min is not None:
        return {"model_input_size": int(param.min)}
    return {}


async def probe_mode(client: Any, name: str, mode: Any, report: Report) -> bool:
    source = probe_image()
    params = probe_params(mode)
    workflow = mode.build("probe.png", task_id="doctor-probe", params=params)
    want = expected_size(workflow, PROBE_SIZE)
    started = time.monotonic()
    prompt_id = f"doctor-{uuid.uuid4()}"
    loop = asyncio.get_running_loop()
    try:
        output, _ = await client.run(
            lambda image: mode.build(image, task_id="doctor-probe", params=params),
            source,
            f"repairbot-doctor-{name}.png",
            mode.output_node,
            prompt_id=prompt_id,
            deadline=loop.time() + PROBE_TIMEOUT_S,
        )
    except RepairError as exc:
        detail = exc.detail or exc.code
        if stale_model.model_missing(detail):
            advice = (
                "the DDColor checkpoint is missing or unreadable on this ComfyUI: install it with `repairbot "
                "comfyui install` (or --weights PATH, into custom_nodes/ComfyUI-DDColor/checkpoints/); this "
                "probe sent POST /free so the next run loads it fresh"
            )
        elif exc.code == "comfyui_rejected":
            advice = "ComfyUI refused the workflow: see plain `repairbot doctor` for the node or value it lacks"
        else:
            advice = "the run failed; ComfyUI's log has the traceback; this probe sent POST /free"
        if exc.code in ("comfyui_failed",):
            await stale_model.recover_instance(client, "a failed probe")
        report(False, f"  probe {name}: {detail[:300]}\n       what to do: {advice}")
        return False
    took = time.monotonic() - started
    try:
        with Image.open(io.BytesIO(output)) as image:
            got = image.size
    except Exception:  # noqa: BLE001 - anything unreadable is the finding
        report(False, f"  probe {name}: the output is not an image ({len(output)} bytes)")
        return False
    if got != want:
        report(
            False,
            f"  probe {name}: output is {got[0]}x{got[1]}, expected {want[0]}x{want[1]}: the workflow "
            "changes the size; check workflows/",
        )
        return False
    if stale_model.colorizes(mode):
        colour = stale_model.chroma(output)
        if colour <= stale_model.GREY_OUTPUT_MAX:
            await stale_model.recover_instance(client, "a grey probe")
            report(
                False,
                f"  probe {name}: the output is grey (chroma {colour:.1f}): DDColor ran on a network that "
                "never loaded its checkpoint (stale after a missing file) or the checkpoint is broken.\n"
                "       what to do: this probe sent POST /free; run `repairbot doctor --probe` again, and if it "
                "stays grey reinstall the checkpoint (`repairbot comfyui install`) or restart ComfyUI",
            )
            return False
        report(True, f"  probe {name}: {got[0]}x{got[1]} in colour (chroma {colour:.0f}) in {took:.1f} s")
    else:
        report(True, f"  probe {name}: {got[0]}x{got[1]} as expected in {took:.1f} s")
    return True


async def probe_all(client: Any, modes: dict[str, Any], report: Report) -> None:
    await client.start()
    for name, mode in modes.items():
        await probe_mode(client, name, mode, report)
