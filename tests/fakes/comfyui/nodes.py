"""The node classes the fake can run, with real Pillow work so tests can check results.

Images travel between nodes as PIL RGB images (one image per batch). `DDColor_Colorize` applies a
fixed warm tint (R=L, G=0.85 L, B=0.6 L) so a grey input visibly comes back "colorized".
"""

from __future__ import annotations

import io
import json
import posixpath
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from PIL import Image, ImageFilter, PngImagePlugin

FAKE_ROOT = "<COMFYUI_ROOT>"
_RESAMPLE = {
    "nearest-exact": Image.NEAREST,
    "bilinear": Image.BILINEAR,
    "area": Image.BOX,
    "bicubic": Image.BICUBIC,
    "lanczos": Image.LANCZOS,
}


class NodeFailure(Exception):
    """A node raised at run time; becomes an `execution_error` with this type and message."""

    def __init__(self, exception_type: str, message: str):
        super().__init__(message)
        self.exception_type = exception_type
        self.message = message


@dataclass
class NodeContext:
    """What a node may touch: the fake's file store and the prompt being run."""

    read_input: Callable[[str], bytes | None]  # LoadImage value -> bytes
    write_output: Callable[[str, str, bytes], None]  # (kind, "sub/name", bytes)
    output_names: Callable[[str, str], list[str]]  # (kind, subfolder) -> file names
    send_binary: Callable[[str, bytes], None]  # (node_id, png) for SaveImageWebsocket
    send_progress: Callable[[str, int, int], None]
    prompt: dict
    extra_data: dict = field(default_factory=dict)
    checkpoint_present: Callable[[str], bool] = lambda name: True
    checkpoint_sound: Callable[[str], bool] = lambda name: True  # False: loads with strict=False, keys don't fit
    instance: dict = field(default_factory=dict)  # this node's own state, kept across prompts until /free


@dataclass
class NodeResult:
    outputs: list[Any]
    ui: dict | None = None


def _png_bytes(image: Image.Image, text: dict[str, str] | None = None) -> bytes:
    info = PngImagePlugin.PngInfo()
    for key, value in (text or {}).items():
        info.add_text(key, value)
    buffer = io.BytesIO()
    image.convert("RGB").save(buffer, format="PNG", pnginfo=info, compress_level=4)
    return buffer.getvalue()


def load_image(ctx: NodeContext, node_id: str, image: str) -> NodeResult:
    data = ctx.read_input(image)
    if data is None:
        raise NodeFailure("FileNotFoundError", f"[Errno 2] No such file or directory: '{FAKE_ROOT}/input/{image}'")
    try:
        picture = Image.open(io.BytesIO(data))
        picture.load()
    except Exception:  # noqa: BLE001 - any decode failure looks like this upstream
        raise NodeFailure(
            "PIL.UnidentifiedImageError", f"cannot identify image file '{FAKE_ROOT}/input/{image}'"
        ) from None
    mask = picture.getchannel("A") if "A" in picture.getbands() else Image.new("L", (64, 64), 0)
    return NodeResult([picture.convert("RGB"), mask])


def image_scale(
    ctx: NodeContext, node_id: str, image: Image.Image, upscale_method: str, width: int, height: int, crop: str
) -> NodeResult:
    w, h = image.size
    if width == 0 and height == 0:
        return NodeResult([image])
    width = width or max(1, round(w * height / h))
    height = height or max(1, round(h * width / w))
    if crop == "center":
        target, source = width / height, w / h
        if source > target:
            new_w = round(h * target)
            image = image.crop(((w - new_w) // 2, 0, (w - new_w) // 2 + new_w, h))
        elif source < target:
            new_h = round(w / target)
            image = image.crop((0, (h - new_h) // 2, w, (h - new_h) // 2 + new_h))
    return NodeResult([image.resize((width, height), _RESAMPLE[upscale_method])])


def image_scale_by(
    ctx: NodeContext, node_id: str, image: Image.Image, upscale_method: str, scale_by: float
) -> NodeResult:
    w, h = image.size
    size = (max(1, round(w * scale_by)), max(1, round(h * scale_by)))
    return NodeResult([image.resize(size, _RESAMPLE[upscale_method])])


def image_blur(ctx: NodeContext, node_id: str, image: Image.Image, blur_radius: int, sigma: float) -> NodeResult:
    return NodeResult([image.filter(ImageFilter.GaussianBlur(sigma))])


def _tensor_size_error(size: int) -> str | None:
    """DDColor's UNet concatenates skip connections; a size not divisible down the pyramid breaks it."""
    stride = 8
    while stride <= 32:
        if size % stride:
            return (
                f"Sizes of tensors must match except in dimension 1. Expected size {size // stride * 2} "
                f"but got size {size // (stride // 2)} for tensor number 1 in the list."
            )
        stride *= 2
    return None


def ddcolor(ctx: NodeContext, node_id: str, image: Image.Image, model_input_size: int, checkpoint: str) -> NodeResult:
    """kijai's node: the network is built on the node instance, then the checkpoint loaded into it.
    When the file is missing the load raises after the (random) network was kept, and the instance
    never loads again for that checkpoint: later runs "succeed" near-grey until /free drops it."""
    model = ctx.instance
    if model.get("checkpoint") != checkpoint:
        model.update(checkpoint=checkpoint, loaded=False)
        if not ctx.checkpoint_present(checkpoint):
            raise NodeFailure(
                "FileNotFoundError",
                "[Errno 2] No such file or directory: "
                f"'{FAKE_ROOT}/custom_nodes/ComfyUI-DDColor/checkpoints/{checkpoint}'",
            )
        model["loaded"] = ctx.checkpoint_sound(checkpoint)
    problem = _tensor_size_error(model_input_size)
    if problem:
        raise NodeFailure("RuntimeError", problem)
    luminance = image.convert("L")
    if not model["loaded"]:  # random weights: a/b close to zero, the photo comes back grey
        return NodeResult([Image.merge("RGB", (luminance, luminance, luminance.point(lambda v: max(0, v - 1))))])
    tinted = Image.merge(
        "RGB", (luminance, luminance.point(lambda v: round(v * 0.85)), luminance.point(lambda v: round(v * 0.6)))
    )
    return NodeResult([tinted])


def _next_counter(names: list[str], basename: str) -> int:
    pattern = re.compile(re.escape(basename) + r"_(\d+)_")
    counters = [int(m.group(1)) for name in names if (m := pattern.match(name))]
    return max(counters, default=0) + 1


def _save(ctx: NodeContext, image: Image.Image, prefix: str, kind: str) -> dict:
    normalized = posixpath.normpath(prefix)
    if normalized.startswith("..") or normalized.startswith("/"):
        raise NodeFailure(
            "Exception",
            "**** ERROR: Saving image outside the output folder is not allowed."
            f"\n full_output_folder: {FAKE_ROOT}/{kind}/{posixpath.dirname(normalized)}",
        )
    subfolder, basename = posixpath.dirname(normalized), posixpath.basename(normalized)
    counter = _next_counter(ctx.output_names(kind, subfolder), basename)
    filename = f"{basename}_{counter:05}_.png"
    text = {"prompt": json.dumps(ctx.prompt)}
    for key, value in (ctx.extra_data.get("extra_pnginfo") or {}).items():
        text[key] = json.dumps(value)
    ctx.write_output(kind, posixpath.join(subfolder, filename), _png_bytes(image, text))
    return {"filename": filename, "subfolder": subfolder, "type": kind}


def save_image(ctx: NodeContext, node_id: str, images: Image.Image, filename_prefix: str) -> NodeResult:
    return NodeResult([], {"images": [_save(ctx, images, filename_prefix, "output")]})


def preview_image(ctx: NodeContext, node_id: str, images: Image.Image) -> NodeResult:
    return NodeResult([], {"images": [_save(ctx, images, "ComfyUI_temp_fake", "temp")]})


def save_image_websocket(ctx: NodeContext, node_id: str, images: Image.Image) -> NodeResult:
    ctx.send_progress(node_id, 0, 1)
    ctx.send_binary(node_id, _png_bytes(images))
    return NodeResult([])


RUNNERS: dict[str, Callable[..., NodeResult]] = {
    "LoadImage": load_image,
    "ImageScale": image_scale,
    "ImageScaleBy": image_scale_by,
    "ImageBlur": image_blur,
    "DDColor_Colorize": ddcolor,
    "D_DDColor": ddcolor,
    "SaveImage": save_image,
    "PreviewImage": preview_image,
    "SaveImageWebsocket": save_image_websocket,
}
HEAVY_NODES = {"DDColor_Colorize", "D_DDColor"}


def run_node(ctx: NodeContext, node_id: str, class_type: str, inputs: dict[str, Any]) -> NodeResult:
    runner = RUNNERS.get(class_type)
    if runner is None:
        raise NodeFailure("NotImplementedError", f"the ComfyUI fake cannot run {class_type}")
    return runner(ctx, node_id, **inputs)
