"""Decode, validate and normalise images with Pillow, so nothing hostile reaches ComfyUI or a chat.

Every function is pure, synchronous and CPU-bound: callers run big inputs in `asyncio.to_thread`.

- Intake (`check_size`, `probe`, `prepare_input`) refuses with `backend.errors.Refused` and a stable
  code. Limits are checked from the header before any pixel is decoded, so a decompression bomb is
  never expanded; only a format on the whitelist is ever decoded. An ordinary photo (8-bit grey or
  RGB JPEG or PNG, upright, no colour profile) is kept as sent, minus its metadata segments: it is
  verified without a full decode (a JPEG at 1/8 scale, a PNG by its CRCs and inflated size). Only
  what ComfyUI could misread is converted to a clean RGB PNG (CMYK, 16-bit, alpha, palettes, EXIF
  rotation, ICC profiles, animations, the other whitelisted formats).
- Intake records the stored bytes' digest (`content_digest`) on the task, so the worker trusts the
  blob it reads back without decoding it again.
- The worker cleans ComfyUI's result (`finalize_output`): its PNG carries the whole workflow in text
  chunks, which must not reach users; an 8-bit RGB PNG loses them by a chunk rewrite, no decoding.
- Senders build a before/after image (`side_by_side`) and fit results under an upload limit
  (`fit_for_upload`); each platform's own photo rules live in its package (bots/telegram/photos.py).
"""

from __future__ import annotations

import hashlib
import io
import logging
import math
import struct
import zlib
from dataclasses import dataclass
from typing import Any, cast

from PIL import Image

from backend.errors import PermanentTaskError, Refused

# An encoded image; a memoryview is a view into a larger buffer (a ComfyUI WebSocket frame), kept
# uncopied on the way to the blob store.
Encoded = bytes | memoryview

log = logging.getLogger(__name__)

ALLOWED_FORMATS = ("JPEG", "PNG", "WEBP", "BMP", "TIFF", "GIF")

# Pillow names some whitelisted files after a variant: a JPEG carrying a multi-picture index (many
# phone cameras) opens as "MPO". Its first picture is an ordinary JPEG.
_FORMAT_ALIASES = {"MPO": "JPEG"}

# Signatures of the whitelisted formats: when Pillow cannot read a file that starts like one of
# them, the file is damaged rather than something else.
_ALLOWED_SIGNATURES = (
    b"\xff\xd8\xff",  # JPEG
    b"\x89PNG\r\n\x1a\n",
    b"GIF87a",
    b"GIF89a",
    b"BM",
    b"II*\x00",  # TIFF, little-endian
    b"MM\x00*",  # TIFF, big-endian
)

# Image (or image-like) formats people send that we do not take: they get `unsupported_format`
# ("send a JPEG, PNG, ...") rather than `not_an_image`. Recognised by signature only, so no parser
# outside the whitelist ever runs on user bytes.
_FOREIGN_SIGNATURES = {
    b"%PDF-": "PDF",
    b"8BPS": "PSD",
    b"\x00\x00\x01\x00": "ICO",
    b"\x00\x00\x02\x00": "CUR",
    b"%!PS": "EPS",
    b"\xc5\xd0\xd3\xc6": "EPS",
    b"icns": "ICNS",
    b"gimp xcf": "XCF",
    b"DDS ": "DDS",
    b"qoif": "QOI",
    b"\xff\x4f\xff\x51": "JPEG 2000",
    b"\x00\x00\x00\x0cjP  \r\n\x87\n": "JPEG 2000",
    b"\xff\x0a": "JPEG XL",
    b"\x00\x00\x00\x0cJXL \r\n\x87\n": "JPEG XL",
}
_HEIF_BRANDS = (b"heic", b"heix", b"hevc", b"hevx", b"heim", b"heis", b"mif1", b"msf1", b"avif", b"avis")

# Our own stored images (prepared inputs, finalized outputs) were checked against the configured
# limit already; this ceiling only stops a corrupted blob from eating the process's memory.
_OWN_IMAGE_MAX_PIXELS = 100_000_000

PNG_COMPRESS_LEVEL = 3  # Pillow's default 6 takes ~2x the time for ~15% fewer bytes that live hours
COMPARE_GAP = 8
COMPARE_JPEG_QUALITY = 90
UPLOAD_JPEG_QUALITY = 90
UPLOAD_MIN_JPEG_QUALITY = 70
UPLOAD_ATTEMPTS = 10

_BOMB_ERRORS = (Image.DecompressionBombError, Image.DecompressionBombWarning)


@dataclass(frozen=True)
class PreparedImage:
    """An input ready for ComfyUI, upright and without metadata: the sender's own JPEG or PNG bytes
    (`converted` False), else an 8-bit RGB PNG made from it."""

    data: bytes
    width: int
    height: int
    source_format: str
    converted: bool = True

    @property
    def extension(self) -> str:
        return file_extension(self.data)


def file_extension(data: bytes) -> str:
    """The file name extension of a stored input (a kept JPEG, else a PNG), for ComfyUI's upload."""
    return "jpg" if data.startswith(_JPEG_SIGNATURE) else "png"


# --- intake ---------------------------------------------------------------------------------------


def check_size(size: int | None, max_bytes: int) -> None:
    """Refuse by the platform's declared file size, before spending a download on it."""
    if size is not None and size > max_bytes:
        raise _too_large(size, max_bytes)


def prepare_input(data: bytes, *, max_bytes: int, max_pixels: int) -> PreparedImage:
    """Check the header against the limits, then keep the photo as sent when ComfyUI reads it right, else convert its first frame
    to a clean 8-bit RGB PNG."""
    with _open_checked(data, max_bytes=max_bytes, max_pixels=max_pixels) as image:
        width, height, source_format = image.width, image.height, _format_of(image)
        kept = _kept_as_sent(data, image, max_pixels=max_pixels)
        if kept is not None:
            return PreparedImage(kept, width, height, source_format, converted=False)
        rgb = _decode_to_rgb(image, max_pixels=max_pixels)
        # Encode before the file closes: `rgb` may be the opened image itself.
        return PreparedImage(_encode_png(rgb), rgb.width, rgb.height, source_format)


def content_digest(data: bytes) -> str:
    """What intake records on the task for the bytes it stored; the worker compares before trusting.
    SHA-256 (cut to the task field's 128 bits): CPUs with SHA extensions (AMD Zen, Intel since Ice
    Lake) hash it about twice as fast as BLAKE2b. A task queued with an older digest no longer
    matches and is simply checked in full."""
    return hashlib.sha256(data).hexdigest()[:32]


# --- worker ---------------------------------------------------------------------------------------


def recheck_input(data: bytes, *, max_bytes: int, max_pixels: int, digest: str = "") -> bytes:
    """The worker's look at a stored input, before it goes to ComfyUI.

    Bytes whose digest matches the one intake recorded are what intake validated: passed on as they
    are, nothing decoded. Anything else (a task without a digest, from an older producer or written
    by hand; a blob that changed) is checked and normalised exactly as intake would.
    """
    if digest and content_digest(data) == digest:
        return data
    return prepare_input(data, max_bytes=max_bytes, max_pixels=max_pixels).data


def finalize_output(data: Encoded, *, max_pixels: int) -> Encoded:
    """ComfyUI's result without the workflow it carries in PNG text chunks (nor EXIF).

    An 8-bit RGB PNG (what ComfyUI's SaveImage writes) keeps only its pixel chunks, rewritten without
    decoding, and one that has nothing else (what SaveImageWebsocket sends) is passed on as it is;
    anything else is decoded and re-encoded. The chunks are checked whole (lengths, IEND), not their
    CRCs: Pillow wrote them in ComfyUI and TCP carried them, and a CRC pass over a 12 MP result
    costs about as much as everything else the worker does for it.
    """
    try:
        header = _png_header(data)
        if header is not None and header[2:5] == (8, 2, 0):
            width, height = header[:2]
            if width < 1 or height < 1:
                raise Refused("image_broken", detail=f"header says {width}x{height}")
            if width * height > max_pixels:
                raise _too_many_pixels(max_pixels, detail=f"header says {width}x{height}")
            cleaned = _png_pixel_chunks(data, check_crc=False)
            if cleaned is not None:  # None only for a chunk in refuse_if, and none is named here
                return cleaned
        with _open_checked(bytes(data), max_bytes=max(1, len(data)), max_pixels=max_pixels) as image:
            return _encode_png(_decode_to_rgb(image, max_pixels=max_pixels))
    except Refused as refused:
        raise PermanentTaskError(
            "output_invalid", detail=f"ComfyUI output unreadable: {refused.code} {refused.detail}"
        ) from refused


def png_top_rows(data: Encoded, rows: int) -> bytes | None:
    """A PNG of the first `rows` rows of an 8-bit grey, RGB or RGBA PNG, inflating only those: a cheap
    sample of a big image (a colour check need not decode 12 MP). None for any other PNG or input."""
    header = _png_header(data)
    if header is None or header[2] != 8 or header[3] not in (0, 2, 6) or header[4] != 0:
        return None
    width, height, _, colour, _ = header
    rows = min(rows, height)
    wanted = rows * (1 + width * {0: 1, 2: 3, 6: 4}[colour])
    inflater, raw = zlib.decompressobj(), bytearray()
    position = len(_PNG_SIGNATURE)
    try:
        while len(raw) < wanted and position + 12 <= len(data):
            length, kind = struct.unpack(">I4s", data[position : position + 8])
            if kind == b"IDAT":
                raw += inflater.decompress(data[position + 8 : position + 8 + length], wanted - len(raw))
            if kind == b"IEND":
                break
            position += 12 + length
    except zlib.error:
        return None
    if len(raw) < wanted:
        return None
    ihdr = struct.pack(">IIBBBBB", width, rows, 8, colour, 0, 0, 0)
    return (
        _PNG_SIGNATURE
        + _chunk(b"IHDR", ihdr)
        + _chunk(b"IDAT", zlib.compress(bytes(raw[:wanted]), 0))
        + _chunk(b"IEND", b"")
    )


def _chunk(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(payload, zlib.crc32(kind)))


# --- senders --------------------------------------------------------------------------------------


def side_by_side(before: bytes, after: bytes, *, max_side: int = 2048) -> bytes:
    """A "Compare" JPEG: before on the left, after on the right, same height, fitting max_side."""
    left, right = _decode_own_image(before), _decode_own_image(after)
    height, left_width, right_width = _side_by_side_layout(left.size, right.size, max_side)
    canvas = Image.new("RGB", (left_width + COMPARE_GAP + right_width, height), "white")
    canvas.paste(_resized(left, (left_width, height)), (0, 0))
    canvas.paste(_resized(right, (right_width, height)), (left_width + COMPARE_GAP, 0))
    return _encode_jpeg(canvas, COMPARE_JPEG_QUALITY)


def fit_for_upload(data: bytes, *, max_bytes: int) -> bytes:
    """The image itself when under max_bytes, else a smaller JPEG that is (for chat size limits)."""
    if len(data) <= max_bytes:
        return data
    image = _decode_own_image(data)
    scale, quality = 1.0, UPLOAD_JPEG_QUALITY
    for _ in range(UPLOAD_ATTEMPTS):
        size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
        candidate = _encode_jpeg(_resized(image, size), quality)
        if len(candidate) <= max_bytes:
            return candidate
        # JPEG size grows roughly with the pixel count: aim a little under the limit next time.
        scale *= min(0.9, 0.95 * math.sqrt(max_bytes / len(candidate)))
        quality = max(UPLOAD_MIN_JPEG_QUALITY, quality - 5)
    raise PermanentTaskError("output_invalid", detail=f"could not fit the image under {max_bytes} bytes")


# --- opening: header checks, no decoding ----------------------------------------------------------


def _open_checked(data: bytes, *, max_bytes: int, max_pixels: int) -> Image.Image:
    """Open the header of a whitelisted image within the limits; the caller closes it."""
    if not data:
        raise Refused("image_empty", detail="zero bytes")
    if len(data) > max_bytes:
        raise _too_large(len(data), max_bytes)
    _let_our_pixel_limit_govern(max_pixels)
    try:
        image = Image.open(io.BytesIO(data), formats=ALLOWED_FORMATS)
    except _BOMB_ERRORS as bomb:
        raise _too_many_pixels(max_pixels, detail=str(bomb)) from None
    except Exception as error:
        raise _unreadable(data, error) from None
    try:
        _check_header(image, max_pixels)
    except BaseException:
        image.close()
        raise
    return image


def _let_our_pixel_limit_govern(max_pixels: int) -> None:
    """Raise Pillow's own bomb limit (never lower it) when ours is higher, so ours decides.

    Pillow warns above Image.MAX_IMAGE_PIXELS (89 MP) and refuses above twice that. With our limit
    below it (the default 40 MP) every Pillow objection concerns an image we refuse anyway, and is
    turned into too_many_pixels; with a higher configured limit, Pillow's is lifted to match.
    """
    pillow_limit = Image.MAX_IMAGE_PIXELS
    if pillow_limit is not None and max_pixels > pillow_limit:
        Image.MAX_IMAGE_PIXELS = max_pixels


def _check_header(image: Image.Image, max_pixels: int) -> None:
    if _format_of(image) not in ALLOWED_FORMATS:
        raise Refused("unsupported_format", detail=f"format {image.format}")
    width, height = image.size
    if width < 1 or height < 1:
        raise Refused("image_broken", detail=f"header says {width}x{height}")
    if width * height > max_pixels:
        raise _too_many_pixels(max_pixels, detail=f"header says {width}x{height}")


def _format_of(image: Image.Image) -> str:
    return _FORMAT_ALIASES.get(image.format or "", image.format or "")


def _unreadable(data: bytes, error: Exception) -> Refused:
    """Why Pillow could not open these bytes: a damaged photo, a format we don't take, or no image."""
    detail = f"{type(error).__name__}: {error}"
    if data.startswith(_ALLOWED_SIGNATURES) or _is_webp(data):
        return Refused("image_broken", detail=detail)
    foreign = _foreign_format(data)
    if foreign:
        return Refused("unsupported_format", detail=f"format {foreign}")
    return Refused("not_an_image", detail=detail)


def _is_webp(data: bytes) -> bool:
    return data[:4] == b"RIFF" and data[8:12] == b"WEBP"


def _foreign_format(data: bytes) -> str | None:
    """Name a known image format outside the whitelist from its signature, else None."""
    for signature, name in _FOREIGN_SIGNATURES.items():
        if data.startswith(signature):
            return name
    if data[4:8] == b"ftyp" and data[8:12] in _HEIF_BRANDS:
        return "HEIF/AVIF"
    if _looks_like_svg(data):
        return "SVG"
    return None


def _looks_like_svg(data: bytes) -> bool:
    """An XML document whose root is <svg> (an HTML page that embeds one is not an image)."""
    head = data[:4096].lstrip(b"\xef\xbb\xbf \t\r\n").lower()
    return (head.startswith(b"<?xml") or head.startswith(b"<svg")) and b"<svg" in head


# --- keeping a photo as sent ----------------------------------------------------------------------

_JPEG_SIGNATURE = b"\xff\xd8\xff"
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# JPEG segments a decoder needs: APP0 (JFIF) and APP14 (Adobe: its transform flag says whether the
# three channels are YCbCr or RGB). Every other APPn (EXIF, XMP, IPTC, maker notes) and COM is
# metadata and goes; ICC profiles (APP2) never get here, they are converted.
_JPEG_KEEP_APPS = (0xE0, 0xEE)
_JPEG_STANDALONE = {0x01, *range(0xD0, 0xD8)}
_PNG_PIXEL_CHUNKS = (b"IHDR", b"IDAT", b"IEND")
_INFLATE_STEP = 1 << 20


def _kept_as_sent(data: bytes, image: Image.Image, *, max_pixels: int) -> bytes | None:
    """The photo's own bytes without metadata when ComfyUI reads them as we would, after a check
    that proves them sound without a full decode; None when it must be converted."""
    if image.mode not in ("L", "RGB") or image.info.get("icc_profile") or "transparency" in image.info:
        return None
    if image.format == "JPEG":
        if _orientation(image) not in (None, 1):
            return None
        _verify_jpeg(image, max_pixels=max_pixels)
        return _strip_jpeg(data)
    if image.format == "PNG":
        header = _png_header(data)
        if header is None or header[2:5] not in ((8, 0, 0), (8, 2, 0)) or getattr(image, "n_frames", 1) != 1:
            return None  # 16-bit, palette, alpha, interlaced, animated: converted
        width, height, _, colour, _ = header
        channels = 3 if colour == 2 else 1
        cleaned = _png_pixel_chunks(
            data, check_crc=True, inflated_size=height * (1 + width * channels), refuse_if=(b"eXIf", b"acTL")
        )
        return cleaned if cleaned is None or isinstance(cleaned, bytes) else bytes(cleaned)
    return None


def _orientation(image: Image.Image) -> int | None:
    try:
        return image.getexif().get(0x0112)
    except Exception:  # unreadable EXIF: the converting path ignores it the same way
        return None


def _verify_jpeg(image: Image.Image, *, max_pixels: int) -> None:
    """Decode at 1/8 scale: every byte of entropy-coded data is read (truncation and corruption show)
    for a fraction of a full decode's work."""
    try:
        image.draft(image.mode, (max(1, image.width // 8), max(1, image.height // 8)))
        image.load()
    except _BOMB_ERRORS as bomb:
        raise _too_many_pixels(max_pixels, detail=str(bomb)) from None
    except Exception as error:
        raise Refused("image_broken", detail=f"{type(error).__name__}: {error}") from None


def _strip_jpeg(data: bytes) -> bytes:
    """The JPEG without metadata segments or anything after its end marker (thumbnails, trailers)."""
    kept = [data[:2]]
    position, changed = 2, False
    while position + 4 <= len(data):
        if data[position] != 0xFF:
            return data  # not a marker where one belongs: leave the verified file alone
        marker = data[position + 1]
        if marker == 0xFF:  # fill byte
            position += 1
            continue
        if marker in _JPEG_STANDALONE:
            kept.append(data[position : position + 2])
            position += 2
            continue
        if marker == 0xDA:  # start of scan: from here on, pixels up to the first end marker
            end = data.find(b"\xff\xd9", position)
            if end < 0:
                kept.append(data[position:])
            else:
                kept.append(data[position : end + 2])
                changed = changed or end + 2 < len(data)
            return b"".join(kept) if changed else data
        (length,) = struct.unpack(">H", data[position + 2 : position + 4])
        segment_end = position + 2 + length
        if (0xE0 <= marker <= 0xEF and marker not in _JPEG_KEEP_APPS) or marker == 0xFE:
            changed = True
        else:
            kept.append(data[position:segment_end])
        position = segment_end
    return data


def _png_header(data: Encoded) -> tuple[int, int, int, int, int] | None:
    """(width, height, bit depth, colour type, interlace) from a PNG's IHDR, None if not a PNG."""
    if len(data) < 33 or data[:8] != _PNG_SIGNATURE or data[12:16] != b"IHDR":
        return None
    width, height, depth, colour, _, _, interlace = struct.unpack(">IIBBBBB", data[16:29])
    return width, height, depth, colour, interlace


def _png_pixel_chunks(
    data: Encoded, *, check_crc: bool, inflated_size: int | None = None, refuse_if: tuple[bytes, ...] = ()
) -> Encoded | None:
    """The PNG rebuilt from IHDR, IDAT and IEND alone: text, EXIF, time and every other ancillary
    chunk dropped; `data` itself when there is nothing to drop. Truncation and (with check_crc)
    corruption are image_broken; with inflated_size, the pixel data must inflate to exactly that many
    bytes, read in bounded steps (no bomb). A chunk in refuse_if returns None (the caller converts)."""
    view = memoryview(data)
    kept: list[bytes | memoryview] = [_PNG_SIGNATURE]
    dropped = False
    inflater = zlib.decompressobj() if inflated_size is not None else None
    inflated = 0
    position = len(_PNG_SIGNATURE)
    while True:
        if position + 12 > len(data):
            raise Refused("image_broken", detail="PNG ends before IEND")
        length, kind = struct.unpack(">I4s", view[position : position + 8])
        end = position + 12 + length
        if end > len(data):
            raise Refused("image_broken", detail=f"PNG chunk {kind!r} runs past the end")
        if kind in refuse_if:
            return None
        if check_crc:
            stored = int.from_bytes(view[end - 4 : end], "big")
            if zlib.crc32(view[position + 8 : end - 4], zlib.crc32(kind)) != stored:
                raise Refused("image_broken", detail=f"PNG chunk {kind!r} fails its CRC")
        if kind in _PNG_PIXEL_CHUNKS:
            kept.append(view[position:end])
        else:
            dropped = True
        if kind == b"IDAT" and inflater is not None:
            inflated += _inflate_counting(inflater, view[position + 8 : end - 4], inflated, inflated_size)
        if kind == b"IEND":
            dropped = dropped or end < len(data)  # bytes after IEND go too
            break
        position = end
    if inflater is not None and (inflated != inflated_size or not inflater.eof):
        raise Refused("image_broken", detail=f"PNG pixel data inflates to {inflated} bytes, not {inflated_size}")
    return b"".join(kept) if dropped else data  # a 12 MP copy saved when nothing goes


def _inflate_counting(inflater: Any, payload: memoryview, so_far: int, limit: int | None) -> int:
    """Bytes one IDAT inflates to, never holding more than _INFLATE_STEP of them at once."""
    counted = 0
    pending: bytes | memoryview = payload
    try:
        while pending:
            counted += len(inflater.decompress(pending, _INFLATE_STEP))
            if limit is not None and so_far + counted > limit:
                raise Refused("image_broken", detail="PNG pixel data inflates past its size")
            pending = inflater.unconsumed_tail
    except zlib.error as error:
        raise Refused("image_broken", detail=f"PNG pixel data: {error}") from None
    return counted


# --- decoding and normalising ---------------------------------------------------------------------


def _decode_to_rgb(image: Image.Image, *, max_pixels: int) -> Image.Image:
    """Decode the first frame fully and return it upright as 8-bit RGB.

    A truncated or corrupt file fails here (Pillow's LOAD_TRUNCATED_IMAGES is never set), and any
    Pillow failure becomes image_broken: a user gets a sentence, never a traceback.
    """
    try:
        image.load()  # the current frame is the first one: GIFs and animations stop there
        _apply_exif_orientation(image)
        return _normalise_to_rgb(image)
    except _BOMB_ERRORS as bomb:
        raise _too_many_pixels(max_pixels, detail=str(bomb)) from None
    except Exception as error:
        raise Refused("image_broken", detail=f"{type(error).__name__}: {error}") from None


def _apply_exif_orientation(image: Image.Image) -> None:
    """Turn the pixels the way the camera meant; unreadable EXIF is metadata, not a broken photo."""
    from PIL import ImageOps  # only conversions need it: a kept photo (and `repairbot submit`) starts without

    try:
        ImageOps.exif_transpose(image, in_place=True)
    except Exception as error:
        log.info("ignoring unreadable EXIF orientation: %s: %s", type(error).__name__, error)


def _normalise_to_rgb(image: Image.Image) -> Image.Image:
    """8-bit RGB in sRGB, whatever the mode: deep, 1-bit, palette, CMYK, with or without alpha."""
    icc_profile = image.info.get("icc_profile")
    image = _to_8bit(image)
    if _has_alpha(image):
        image = _flatten_on_white(image)
    elif image.mode not in ("RGB", "L", "CMYK"):
        image = image.convert("RGB")
    return _to_srgb(image, icc_profile)


def _to_8bit(image: Image.Image) -> Image.Image:
    """16/32-bit and float grey to 8-bit L by scaling (Pillow's plain convert clips), 1-bit to L."""
    if image.mode == "1":
        return image.convert("L")
    if not (image.mode.startswith("I") or image.mode == "F"):
        return image
    wide = image.convert("F") if image.mode == "F" else image.convert("I")
    low, high = cast(tuple[float, float], wide.getextrema())  # one band: its (min, max)
    if low >= 0 and high <= 255:
        scaled = wide
    elif low >= 0 and high <= 65535:
        scaled = wide.point(lambda value: value * (1 / 256))
    else:  # an unusual range (signed or float): stretch what is there
        span = (high - low) or 1
        scaled = wide.point(lambda value: (value - low) * (255 / span))
    return scaled.convert("L")


def _has_alpha(image: Image.Image) -> bool:
    return image.mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in image.info


def _flatten_on_white(image: Image.Image) -> Image.Image:
    """Composite transparency over white: a scanned photo's transparent margin is paper, not black."""
    rgba = image.convert("RGBA")
    background = Image.new("RGB", rgba.size, "white")
    background.paste(rgba.convert("RGB"), mask=rgba.getchannel("A"))
    return background


def _to_srgb(image: Image.Image, icc_profile: bytes | None) -> Image.Image:
    """RGB whose colours survive dropping the ICC profile; a bad profile is ignored, not fatal."""
    if icc_profile:
        from PIL import ImageCms  # only photos with a colour profile need the colour engine

        try:
            source = ImageCms.ImageCmsProfile(io.BytesIO(icc_profile))
            converted = ImageCms.profileToProfile(image, source, ImageCms.createProfile("sRGB"), outputMode="RGB")
            if converted is not None:
                return converted
        except Exception as error:
            log.info("ignoring unusable ICC profile: %s: %s", type(error).__name__, error)
    return image if image.mode == "RGB" else image.convert("RGB")


def _decode_own_image(data: bytes) -> Image.Image:
    """Decode an image we stored ourselves (already checked at intake) as RGB.

    Not closed on purpose: the result may be the opened image itself, and a BytesIO holds nothing
    but memory.
    """
    image = _open_checked(data, max_bytes=max(1, len(data)), max_pixels=_OWN_IMAGE_MAX_PIXELS)
    return _decode_to_rgb(image, max_pixels=_OWN_IMAGE_MAX_PIXELS)


# --- encoding and layout --------------------------------------------------------------------------


def _encode_png(image: Image.Image) -> bytes:
    """PNG with pixels only: no EXIF, text chunks, ICC profile or transparency key."""
    image.info = {}  # Pillow's PNG writer copies the ICC profile and transparency from info
    buffer = io.BytesIO()
    image.save(buffer, "PNG", compress_level=PNG_COMPRESS_LEVEL)
    return buffer.getvalue()


def _encode_jpeg(image: Image.Image, quality: int) -> bytes:
    image.info = {}
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=quality, optimize=True)
    return buffer.getvalue()


def _resized(image: Image.Image, size: tuple[int, int]) -> Image.Image:
    if image.size == size:
        return image
    return image.resize(size, Image.Resampling.LANCZOS, reducing_gap=3.0)


def _side_by_side_layout(left: tuple[int, int], right: tuple[int, int], max_side: int) -> tuple[int, int, int]:
    """(height, left width, right width): a shared height no taller than the shorter image, chosen
    so that both widths plus the gap, and the height, stay within max_side."""
    left_aspect = left[0] / left[1]
    right_aspect = right[0] / right[1]
    height = min(
        left[1],
        right[1],
        max_side,
        math.floor((max_side - COMPARE_GAP) / (left_aspect + right_aspect)),
    )
    height = max(1, height)
    return height, max(1, math.floor(left_aspect * height)), max(1, math.floor(right_aspect * height))


def _too_large(size: int, max_bytes: int) -> Refused:
    return Refused("too_large", detail=f"{size} bytes > {max_bytes}", max_mb=max(1, max_bytes // (1024 * 1024)))


def _too_many_pixels(max_pixels: int, *, detail: str) -> Refused:
    return Refused("too_many_pixels", detail=detail, max_mp=max(1, max_pixels // 1_000_000))
