"""No garbage reported as success: what the worker does when a ComfyUI model may be stale.

kijai's DDColor node builds its network on the node instance and only then loads the checkpoint;
when that load fails (file missing) the instance keeps a random network and never loads again, so
later prompts "succeed" with a near-grey photo until `POST /free {"free_memory": true}` drops the
cached node instances. And ComfyUI acts on /free only after it has run the next prompt it already
holds (main.py's prompt loop), so a free sent after a failure does not protect prompts that were
prefetched behind the failed one. Hence two safeguards:

- after a node failure on an instance, our other prompts still waiting there are taken back
  (`POST /queue` delete, interrupt if one already started), /free goes out on an emptied queue
  (applied at once), and those tasks submit again (`PromptTakenBack`);
- a colorizing mode whose output is effectively grey while its input was grey failed on that
  instance: free and retry once, then fail with `model_unavailable` and a line for the admin.
"""

from __future__ import annotations

import io
import logging
from typing import TYPE_CHECKING, cast

from PIL import Image

from backend import images
from backend.errors import PermanentTaskError, TransientTaskError

if TYPE_CHECKING:
    from backend.executors import ComfyUI
    from backend.workflows import Mode

log = logging.getLogger(__name__)

COLORIZING_NODES = frozenset({"DDColor_Colorize", "D_DDColor"})
# Mean per-pixel chroma (max channel - min channel, 0..255) on a small thumbnail. A grey scan or a
# JPEG of one stays under ~3; DDColor output of a real photo is far above 10; a stale network's ~1.
GREY_INPUT_MAX = 4.0
GREY_OUTPUT_MAX = 4.0
THUMB = 96
STRIP_ROWS = 16
GREY_MODES = ("1", "L", "LA", "I", "I;16", "I;16B", "I;16L", "F")
MODEL_MISSING_SIGNS = ("Checkpoint load failed", "/checkpoints/")


class PromptTakenBack(TransientTaskError):
    """We removed this prompt from ComfyUI ourselves (its instance had to be freed): submit it again."""

    code = "comfyui_unavailable"


def colorizes(mode: Mode) -> bool:
    """A mode whose workflow runs a colorizing node: its output must have colour."""
    return any(node.get("class_type") in COLORIZING_NODES for node in mode.template.values())


def chroma(data: images.Encoded) -> float:
    """Mean chroma of an encoded image (0 = perfectly grey; a single-channel file is, undecoded)."""
    with Image.open(io.BytesIO(data)) as image:
        if image.mode in GREY_MODES:
            return 0.0
        image.draft("RGB", (THUMB, THUMB))
        small = image.convert("RGB")
        small.thumbnail((THUMB, THUMB))
    pixels = cast(
        list[tuple[int, ...]],
        list(small.get_flattened_data()) if hasattr(small, "get_flattened_data") else list(small.getdata()),
    )  # an RGB image: one (r, g, b) per pixel
    return sum(max(p) - min(p) for p in pixels) / max(len(pixels), 1)


def grey_result_of_grey_input(mode: Mode, source: bytes, output: images.Encoded) -> tuple[bool, float, float]:
    """(stale?, input chroma, output chroma): True when a colorizing mode gave grey for a grey photo."""
    if not colorizes(mode):
        return False, 0.0, 0.0
    try:
        before = chroma(source)
        if before > GREY_INPUT_MAX:
            return False, before, 0.0  # a colour photo may legitimately come back muted
        # A top strip first: a colourful one settles it without decoding the whole (12 MP) output; a
        # grey one may be a grey sky, so then the whole image decides.
        strip = images.png_top_rows(output, STRIP_ROWS)
        after = chroma(strip) if strip is not None else GREY_OUTPUT_MAX
        if after <= GREY_OUTPUT_MAX:
            after = chroma(output)
    except Exception:  # noqa: BLE001 - unreadable images are judged elsewhere
        return False, 0.0, 0.0
    return after <= GREY_OUTPUT_MAX, before, after


def model_missing(detail: str) -> bool:
    """A node failure that says the checkpoint could not be loaded."""
    return any(sign in detail for sign in MODEL_MISSING_SIGNS)


async def recover_instance(client: ComfyUI, why: str) -> list[str]:
    """Take back this process's other prompts on the instance, then /free it; returns the ids taken."""
    taken: list[str] = []
    try:
        taken = await client.take_back_waiting()
        await client.free()
    except Exception as exc:  # noqa: BLE001 - a failed recovery leaves the grey check as the backstop
        log.warning("could not free ComfyUI %s after %s: %s", client.base_url, why, exc)
        return taken
    log.warning(
        "ComfyUI %s freed after %s; %d waiting prompt(s) taken back to run again", client.base_url, why, len(taken)
    )
    return taken


def broken_model_error(mode: Mode, base_url: str, before: float, after: float) -> PermanentTaskError:
    """Grey twice, even after /free: the checkpoint itself is missing or broken on that instance."""
    log.error(
        "ComfyUI %s: mode %s gave a grey image for a grey photo twice (chroma %.1f -> %.1f), even "
        "after /free: its DDColor checkpoint is missing or broken there. Check with "
        "`repairbot doctor --probe`; reinstall the weights with `repairbot comfyui install`.",
        base_url,
        mode.name,
        before,
        after,
    )
    return PermanentTaskError(
        "model_unavailable", detail=f"grey output after /free on {base_url} (chroma {before:.1f} -> {after:.1f})"
    )
