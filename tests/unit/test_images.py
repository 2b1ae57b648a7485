"""backend.images against hostile and awkward inputs, all generated here (no binary fixtures).

Hostile inputs covered, each with the exact error code expected:
- zero bytes -> image_empty
- random bytes, a plain-text file, an HTML page (even one embedding <svg>), an MP4 `ftyp` box
  -> not_an_image
- a PDF, an SVG document, an EPS, a PSD header, an ICO, a HEIC `ftyp` header, a real AVIF
  -> unsupported_format
- a JPEG and a PNG cut in half, a PNG cut inside its header, a PNG with a corrupted IDAT,
  a zero-width PNG header -> image_broken
- decompression bombs refused from the header without decoding (Image.load patched to fail):
  a hand-built PNG header declaring 30000x30000, a real 30000x30000 1-bit PNG (~100 KB compressed),
  a JPEG whose SOF claims 60000x60000, a GIF whose screen claims 65535x65535, a 10000x10000 header
  in Pillow's warning band with warnings turned into errors -> too_many_pixels
- dimensions just over the limit (8000x5001 against 40 MP; 100x100 against 9999 pixels)
  -> too_many_pixels, exactly at the limit accepted
- bytes over max_bytes, and a declared size over the limit (check_size) -> too_large
- an unexpected Pillow exception while decoding -> image_broken, never an uncaught exception
- broken or empty ComfyUI output -> PermanentTaskError output_invalid
Ordinary photos (8-bit grey or RGB JPEG/PNG, upright, no ICC) are kept as sent minus their metadata
(EXIF, XMP, comments, text chunks, trailers after the JPEG end), verified without a full decode: a
PNG whose CRCs hold but whose pixel data inflates to the wrong size is image_broken.
Awkward but valid inputs converted to 8-bit RGB PNG without metadata: CMYK JPEG, 16-bit grey PNG
(scaled, not clipped), 16-bit TIFF, palette PNG with transparency, RGBA, LA, 1-bit, animated GIF and
APNG (first frame), multi-picture JPEG (MPO), EXIF orientation 6 (dimensions swapped), PNG carrying
text, EXIF and an ICC profile; TIFF, WEBP and BMP accepted; the real photos in tests/data/photos.
Also: finalize_output strips a "prompt" text chunk and EXIF, side_by_side dimensions, fit_for_upload
gets under the limit, Pillow's own bomb limit never overriding ours.
"""

from __future__ import annotations

import io
import random
import struct
import warnings
import zlib

import pytest
from PIL import Image, ImageCms, ImageFile, PngImagePlugin

from backend import images
from backend.errors import PermanentTaskError, Refused
from tests.conftest import PHOTOS

MAX_BYTES = 20 * 1024 * 1024
MAX_PIXELS = 40_000_000
LIMITS = {"max_bytes": MAX_BYTES, "max_pixels": MAX_PIXELS}
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


# --- generators -----------------------------------------------------------------------------------


def encode(image: Image.Image, fmt: str, **params) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **params)
    return buffer.getvalue()


def halves(mode: str, size: tuple[int, int], left, right) -> Image.Image:
    """An image whose left half is `left` and right half is `right`."""
    image = Image.new(mode, size, left)
    image.paste(right, (size[0] // 2, 0, size[0], size[1]))
    return image


def png_chunk(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))


def png_file(ihdr: bytes, idat: bytes) -> bytes:
    return PNG_SIGNATURE + png_chunk(b"IHDR", ihdr) + png_chunk(b"IDAT", idat) + png_chunk(b"IEND", b"")


def png_header_only(width: int, height: int) -> bytes:
    """A PNG that declares its size but carries (almost) no pixels: what a bomb's header looks like."""
    return png_file(struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0), zlib.compress(b""))


def sixteen_bit_grey_png(width: int, height: int, left: int, right: int) -> bytes:
    """A 16-bit greyscale PNG, left half `left` and right half `right` (built by hand: Pillow's
    paste into I;16 keeps only the low byte)."""
    half = width // 2
    row = b"\x00" + struct.pack(f">{width}H", *([left] * half + [right] * (width - half)))
    return png_file(struct.pack(">IIBBBBB", width, height, 16, 0, 0, 0, 0), zlib.compress(row * height))


def one_bit_png_bomb(side: int) -> bytes:
    """A valid all-black 1-bit PNG of side x side pixels, compressed to almost nothing."""
    row = b"\x00" * (1 + (side + 7) // 8)  # filter byte + packed bits
    compressor = zlib.compressobj(9)
    idat = b"".join(compressor.compress(row) for _ in range(side)) + compressor.flush()
    return png_file(struct.pack(">IIBBBBB", side, side, 1, 0, 0, 0, 0), idat)


def jpeg_claiming(width: int, height: int) -> bytes:
    """A small real JPEG whose SOF0 segment is rewritten to claim width x height."""
    data = bytearray(encode(Image.new("L", (16, 16), 128), "JPEG"))
    position = 2
    while data[position + 1] != 0xC0:  # walk the segments to the start-of-frame marker
        position += 2 + struct.unpack(">H", data[position + 2 : position + 4])[0]
    data[position + 5 : position + 9] = struct.pack(">HH", height, width)
    return bytes(data)


def gif_claiming(width: int, height: int) -> bytes:
    data = bytearray(encode(Image.new("P", (8, 8), 0), "GIF"))
    data[6:10] = struct.pack("<HH", width, height)
    return bytes(data)


def noise(size: tuple[int, int], seed: int = 7) -> Image.Image:
    """Incompressible pixels, to make files large cheaply."""
    return Image.frombytes("RGB", size, random.Random(seed).randbytes(size[0] * size[1] * 3))


def decoded(data: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(data))
    image.load()
    return image


def refused(code: str, function, *args, **kwargs) -> Refused:
    with pytest.raises(Refused) as caught:
        function(*args, **kwargs)
    assert caught.value.code == code, caught.value.detail
    return caught.value


@pytest.fixture
def forbid_decoding(monkeypatch: pytest.MonkeyPatch):
    """Call it once the inputs are built: from then on, decoding any pixel fails the test."""

    def forbidden(self, *args, **kwargs):
        raise AssertionError("pixels were decoded")

    def arm() -> None:
        monkeypatch.setattr(Image.Image, "load", forbidden)
        monkeypatch.setattr(ImageFile.ImageFile, "load", forbidden)

    return arm


def assert_clean_rgb_png(data: bytes) -> Image.Image:
    """The output contract: an 8-bit RGB PNG with no text, EXIF, ICC or transparency chunk."""
    assert data.startswith(PNG_SIGNATURE)
    for chunk in (b"tEXt", b"iTXt", b"zTXt", b"eXIf", b"iCCP", b"tRNS", b"acTL"):
        assert chunk not in data, chunk
    image = decoded(data)
    assert image.format == "PNG" and image.mode == "RGB"
    assert not image.info.get("exif") and not image.info.get("icc_profile")
    return image


def assert_clean_input(prepared: images.PreparedImage, original: bytes) -> Image.Image:
    """The input contract: a converted input is a clean RGB PNG; a kept one is the sender's own
    format and pixel data, with no metadata, no bigger than it was."""
    if prepared.converted:
        return assert_clean_rgb_png(prepared.data)
    assert len(prepared.data) <= len(original)
    for marker in (b"tEXt", b"iTXt", b"zTXt", b"eXIf", b"iCCP", b"Exif\x00", b"http://ns.adobe.com"):
        assert marker not in prepared.data, marker
    image = decoded(prepared.data)
    assert image.format == decoded(original).format and image.mode in ("L", "RGB")
    assert image.tobytes() == decoded(original).tobytes()
    return image


def prepare(data: bytes, **limits) -> images.PreparedImage:
    return images.prepare_input(data, **{**LIMITS, **limits})


# --- size -----------------------------------------------------------------------------------------


def test_check_size_refuses_only_a_declared_size_over_the_limit():
    images.check_size(None, MAX_BYTES)
    images.check_size(MAX_BYTES, MAX_BYTES)
    error = refused("too_large", images.check_size, MAX_BYTES + 1, MAX_BYTES)
    assert error.values == {"max_mb": 20}
    assert "20 MB" in error.user_message("en")


def test_zero_bytes_is_empty():
    refused("image_empty", images.prepare_input, b"", **LIMITS)
    refused("image_empty", images.prepare_input, b"", **LIMITS)


def test_bytes_over_max_bytes_are_too_large(photo_bytes: bytes):
    limit = len(photo_bytes) - 1
    error = refused("too_large", images.prepare_input, photo_bytes, max_bytes=limit, max_pixels=MAX_PIXELS)
    assert error.values == {"max_mb": 1}
    kept = images.prepare_input(photo_bytes, max_bytes=len(photo_bytes), max_pixels=MAX_PIXELS)
    assert kept.source_format == "JPEG"


# --- not images, other formats, damaged files -----------------------------------------------------


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(random.Random(1).randbytes(4096), id="random-bytes"),
        pytest.param(b"Dear grandma,\nhere is the photo of uncle Bob.\n" * 20, id="text-file"),
        pytest.param(b"<!DOCTYPE html><html><body><svg width='10'></svg></body></html>", id="html"),
        pytest.param(b"\x00\x00\x00\x18ftypmp42\x00\x00\x00\x00mp42isom" + bytes(64), id="mp4-video"),
    ],
)
def test_non_images_are_refused_as_not_an_image(data: bytes):
    refused("not_an_image", images.prepare_input, data, **LIMITS)
    refused("not_an_image", images.prepare_input, data, **LIMITS)


def _svg() -> bytes:
    return b'<?xml version="1.0"?>\n<svg xmlns="http://www.w3.org/2000/svg" width="9" height="9"/>'


@pytest.mark.parametrize(
    "make",
    [
        pytest.param(lambda: encode(Image.new("RGB", (32, 32), "red"), "PDF"), id="pdf"),
        pytest.param(lambda: b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n1 0 obj\n", id="pdf-header"),
        pytest.param(_svg, id="svg"),
        pytest.param(lambda: encode(Image.new("RGB", (32, 32), "red"), "EPS"), id="eps"),
        pytest.param(lambda: b"8BPS\x00\x01" + bytes(6) + struct.pack(">HIIHH", 3, 32, 32, 8, 3), id="psd"),
        pytest.param(lambda: encode(Image.new("RGBA", (32, 32), "red"), "ICO"), id="ico"),
        pytest.param(lambda: b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00mif1heic" + bytes(64), id="heic"),
        pytest.param(lambda: encode(Image.new("RGB", (32, 32), "red"), "AVIF"), id="avif"),
    ],
)
def test_formats_outside_the_whitelist_are_unsupported(make):
    data = make()
    refused("unsupported_format", images.prepare_input, data, **LIMITS)
    refused("unsupported_format", images.prepare_input, data, **LIMITS)


def test_truncated_jpeg_is_broken(photo_bytes: bytes):
    cut = photo_bytes[: len(photo_bytes) // 2]
    refused("image_broken", images.prepare_input, cut, **LIMITS)  # though the header alone looks fine
    assert not ImageFile.LOAD_TRUNCATED_IMAGES


def test_truncated_png_is_broken():
    data = (PHOTOS / "camera_gray.png").read_bytes()
    refused("image_broken", images.prepare_input, data[: len(data) // 2], **LIMITS)
    refused("image_broken", images.prepare_input, data[:20], **LIMITS)  # cut inside IHDR


def test_png_with_corrupted_pixel_data_is_broken():
    data = bytearray(encode(noise((64, 64)), "PNG"))
    start = data.index(b"IDAT") + 4
    data[start + 100 : start + 200] = bytes(100)
    refused("image_broken", images.prepare_input, bytes(data), **LIMITS)


def test_zero_width_header_is_broken():
    refused("image_broken", images.prepare_input, png_header_only(0, 100), **LIMITS)


def test_unexpected_pillow_exception_becomes_image_broken(monkeypatch: pytest.MonkeyPatch):
    data = encode(Image.new("CMYK", (16, 16)), "JPEG")

    def explode(self, *args, **kwargs):
        raise RuntimeError("unexpected inside Pillow")

    monkeypatch.setattr(Image.Image, "convert", explode)
    refused("image_broken", images.prepare_input, data, **LIMITS)


# --- pixel limits and decompression bombs ---------------------------------------------------------


@pytest.mark.parametrize(
    "make",
    [
        pytest.param(lambda: png_header_only(30000, 30000), id="png-header-30000x30000"),
        pytest.param(lambda: one_bit_png_bomb(30000), id="real-1bit-png-30000x30000"),
        pytest.param(lambda: jpeg_claiming(60000, 60000), id="jpeg-sof-60000x60000"),
        pytest.param(lambda: gif_claiming(65535, 65535), id="gif-screen-65535x65535"),
        pytest.param(lambda: jpeg_claiming(8000, 5001), id="just-over-40mp"),
    ],
)
def test_decompression_bombs_are_refused_without_decoding(make, forbid_decoding):
    data = make()
    forbid_decoding()
    assert len(data) < 200_000
    error = refused("too_many_pixels", images.prepare_input, data, **LIMITS)
    assert error.values == {"max_mp": 40}
    refused("too_many_pixels", images.prepare_input, data, **LIMITS)


def test_exactly_at_the_pixel_limit_passes_the_header_check():
    data = jpeg_claiming(8000, 5000)
    prepared = images.prepare_input(data, **LIMITS)
    assert (prepared.width, prepared.height, prepared.source_format) == (8000, 5000, "JPEG")


def test_pixel_limit_boundary_on_a_real_image():
    data = encode(Image.new("L", (100, 100), 90), "PNG")
    refused("too_many_pixels", images.prepare_input, data, max_bytes=MAX_BYTES, max_pixels=9_999)
    assert prepare(data, max_pixels=10_000).width == 100


def test_pillow_bomb_warning_turned_error_still_means_too_many_pixels(forbid_decoding):
    """10000x10000 is inside Pillow's warning band (89-179 MP); -W error must not leak it."""
    forbid_decoding()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        refused("too_many_pixels", images.prepare_input, png_header_only(10000, 10000), **LIMITS)


def test_our_pixel_limit_governs_over_pillows(monkeypatch: pytest.MonkeyPatch):
    """With Pillow's limit set far below ours, an image within ours is still accepted."""
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1_000)
    data = encode(Image.new("L", (100, 100), 90), "PNG")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert prepare(data, max_pixels=20_000).width == 100
    assert Image.MAX_IMAGE_PIXELS >= 20_000  # raised to ours, never lowered
    refused("too_many_pixels", images.prepare_input, data, max_bytes=MAX_BYTES, max_pixels=9_999)


# --- probing reads headers only -------------------------------------------------------------------


# --- normalisation to clean 8-bit RGB -------------------------------------------------------------


@pytest.mark.parametrize("photo", ["astronaut_gray.jpg", "camera_gray.png", "rocket_gray.jpg"])
def test_real_photos_are_kept_as_sent(photo: str):
    data = (PHOTOS / photo).read_bytes()
    sent = decoded(data)
    prepared = prepare(data)
    assert not prepared.converted
    image = assert_clean_input(prepared, data)
    assert (prepared.width, prepared.height) == sent.size == image.size
    assert prepared.source_format == sent.format
    assert prepared.extension == ("png" if photo.endswith(".png") else "jpg")
    rgb = image.convert("RGB")
    red, green, blue = rgb.split()
    assert red.tobytes() == green.tobytes() == blue.tobytes()  # a grey photo stays grey


def test_jpeg_metadata_and_trailer_go_the_pixels_stay():
    exif = Image.Exif()
    exif[0x010F] = "CameraMaker"
    exif[0x8825] = {2: (52.0, 31.0, 0.0)}  # a GPS latitude
    original = encode(noise((64, 48)), "JPEG", quality=90, exif=exif.tobytes(), comment=b"secret note")
    data = original + b"TRAILER-secret-video"
    prepared = prepare(data)
    assert not prepared.converted and prepared.source_format == "JPEG"
    assert b"CameraMaker" not in prepared.data and b"secret" not in prepared.data
    assert prepared.data.endswith(b"\xff\xd9") and len(prepared.data) < len(original)
    scan = original.index(b"\xff\xda")
    assert prepared.data.endswith(original[scan:])  # entropy-coded data untouched
    assert decoded(prepared.data).tobytes() == decoded(original).tobytes()


def test_png_text_chunks_go_the_pixel_chunks_stay():
    text = PngImagePlugin.PngInfo()
    text.add_text("Comment", "secret location")
    original = encode(noise((40, 30)), "PNG", pnginfo=text)
    prepared = prepare(original)
    assert not prepared.converted
    assert b"secret" not in prepared.data
    assert assert_clean_rgb_png(prepared.data).tobytes() == decoded(original).tobytes()
    idat = original.index(b"IDAT") - 4
    assert prepared.data.endswith(original[idat:])  # IDAT and IEND, byte for byte


def test_png_whose_pixels_inflate_to_the_wrong_size_is_broken(forbid_decoding):
    """CRCs all correct, but the IDAT holds fewer rows than IHDR declares (found without Pillow decoding)."""
    row = b"\x00" + bytes(16 * 3)
    data = png_file(struct.pack(">IIBBBBB", 16, 16, 8, 2, 0, 0, 0), zlib.compress(row * 8))
    forbid_decoding()
    refused("image_broken", images.prepare_input, data, **LIMITS)


def test_jpeg_with_an_icc_profile_is_converted_to_srgb():
    icc = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    data = encode(Image.new("RGB", (16, 16), (120, 80, 40)), "JPEG", icc_profile=icc, quality=95)
    prepared = prepare(data)
    assert prepared.converted and prepared.extension == "png"
    assert_clean_rgb_png(prepared.data)


def test_photo_bytes_fixture(photo_bytes: bytes):
    prepared = prepare(photo_bytes)
    assert (prepared.width, prepared.height, prepared.source_format) == (512, 512, "JPEG")


@pytest.mark.parametrize("converted", [False, True])
def test_preparing_a_prepared_image_changes_nothing(photo_bytes: bytes, converted: bool):
    """The worker re-checks a stored input without a digest: a second pass keeps the same bytes."""
    source = encode(Image.new("RGBA", (20, 20), (9, 9, 9, 255)), "PNG") if converted else photo_bytes
    once = prepare(source)
    assert once.converted is converted
    twice = prepare(once.data)
    assert not twice.converted and twice.data == once.data
    assert (twice.width, twice.height) == (once.width, once.height)


def test_cmyk_jpeg_becomes_rgb():
    data = encode(halves("CMYK", (32, 16), (0, 255, 255, 0), (0, 0, 0, 255)), "JPEG", quality=95)
    assert decoded(data).mode == "CMYK"
    image = assert_clean_rgb_png(prepare(data).data)
    red, green, blue = image.getpixel((4, 8))
    assert red > 200 and green < 60 and blue < 60
    assert max(image.getpixel((28, 8))) < 60


def test_sixteen_bit_grey_png_is_scaled_not_clipped():
    data = sixteen_bit_grey_png(32, 16, 40000, 1000)
    assert decoded(data).mode == "I;16"
    image = assert_clean_rgb_png(prepare(data).data)
    assert image.getpixel((4, 8)) == (156, 156, 156)  # 40000 / 256
    assert image.getpixel((28, 8)) == (3, 3, 3)


def test_sixteen_bit_tiff_is_scaled():
    data = encode(Image.new("I;16", (16, 16), 65535), "TIFF")
    prepared = prepare(data)
    assert prepared.source_format == "TIFF"
    assert assert_clean_rgb_png(prepared.data).getpixel((8, 8)) == (255, 255, 255)


def test_palette_png_with_transparency_is_composited_over_white():
    palette_image = halves("P", (32, 16), 0, 1)
    palette_image.putpalette([0, 0, 0, 0, 0, 255] + [0] * 762)
    data = encode(palette_image, "PNG", transparency=0)
    image = assert_clean_rgb_png(prepare(data).data)
    assert image.getpixel((4, 8)) == (255, 255, 255)
    assert image.getpixel((28, 8)) == (0, 0, 255)


@pytest.mark.parametrize(
    ("mode", "transparent", "opaque", "expected_opaque"),
    [
        ("RGBA", (0, 0, 0, 0), (200, 10, 10, 255), (200, 10, 10)),
        ("LA", (0, 0), (60, 255), (60, 60, 60)),
    ],
)
def test_alpha_is_composited_over_white(mode, transparent, opaque, expected_opaque):
    data = encode(halves(mode, (32, 16), transparent, opaque), "PNG")
    image = assert_clean_rgb_png(prepare(data).data)
    assert image.getpixel((4, 8)) == (255, 255, 255)
    assert image.getpixel((28, 8)) == expected_opaque


def test_one_bit_image_becomes_rgb():
    data = encode(halves("1", (32, 16), 0, 1), "PNG")
    image = assert_clean_rgb_png(prepare(data).data)
    assert image.getpixel((4, 8)) == (0, 0, 0)
    assert image.getpixel((28, 8)) == (255, 255, 255)


@pytest.mark.parametrize("fmt", ["GIF", "PNG", "WEBP"])
def test_animation_keeps_only_the_first_frame(fmt: str):
    frames = [Image.new("RGB", (24, 24), colour) for colour in ("red", "lime", "blue")]
    params = {"lossless": True} if fmt == "WEBP" else {}
    data = encode(frames[0], fmt, save_all=True, append_images=frames[1:], duration=100, loop=0, **params)
    assert getattr(decoded(data), "n_frames", 1) == 3
    prepared = prepare(data)
    assert prepared.source_format == fmt
    red, green, blue = assert_clean_rgb_png(prepared.data).getpixel((12, 12))
    assert red > 230 and green < 25 and blue < 25


def test_multi_picture_jpeg_is_taken_as_jpeg():
    first, second = Image.new("RGB", (20, 10), "white"), Image.new("RGB", (20, 10), "black")
    data = encode(first, "MPO", save_all=True, append_images=[second])
    assert decoded(data).format == "MPO"
    prepared = prepare(data)
    assert prepared.source_format == "JPEG"
    assert min(assert_clean_rgb_png(prepared.data).getpixel((10, 5))) > 230


def test_exif_orientation_is_applied():
    """Orientation 6: the camera was turned clockwise; the upright picture is taller than wide."""
    exif = Image.Exif()
    exif[0x0112] = 6
    data = encode(halves("L", (40, 20), 0, 255), "JPEG", exif=exif.tobytes(), quality=95)
    assert decoded(data).size == (40, 20)  # as stored
    prepared = prepare(data)
    assert (prepared.width, prepared.height) == (20, 40)
    image = assert_clean_rgb_png(prepared.data)
    assert image.size == (20, 40)
    assert max(image.getpixel((10, 5))) < 30  # the stored left half is now the top
    assert min(image.getpixel((10, 35))) > 225


@pytest.mark.parametrize(("fmt", "params"), [("TIFF", {}), ("WEBP", {"lossless": True}), ("BMP", {}), ("GIF", {})])
def test_whitelisted_formats_are_accepted(fmt: str, params: dict):
    data = encode(Image.new("RGB", (30, 20), (10, 120, 200)), fmt, **params)
    prepared = prepare(data)
    assert (prepared.width, prepared.height, prepared.source_format) == (30, 20, fmt)
    assert_clean_rgb_png(prepared.data)


def test_metadata_is_stripped_from_inputs():
    text = PngImagePlugin.PngInfo()
    text.add_text("Comment", "secret location")
    text.add_itxt("Description", "more secrets", zip=True)
    exif = Image.Exif()
    exif[0x010F] = "CameraMaker"
    icc = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    data = encode(Image.new("RGB", (16, 16), (120, 80, 40)), "PNG", pnginfo=text, exif=exif, icc_profile=icc)
    assert b"secret" in data and b"iCCP" in data and b"eXIf" in data
    output = prepare(data).data
    assert b"secret" not in output and b"CameraMaker" not in output
    assert assert_clean_rgb_png(output).getpixel((8, 8)) == (120, 80, 40)


# --- ComfyUI output -------------------------------------------------------------------------------


def test_finalize_output_strips_workflow_text_and_exif():
    text = PngImagePlugin.PngInfo()
    text.add_text("prompt", '{"3": {"class_type": "KSampler", "inputs": {"seed": 42}}}')
    text.add_text("workflow", '{"nodes": []}')
    exif = Image.Exif()
    exif[0x0131] = "ComfyUI"
    comfy_png = encode(Image.new("RGBA", (48, 32), (30, 140, 90, 255)), "PNG", pnginfo=text, exif=exif)
    assert b"KSampler" in comfy_png and b"eXIf" in comfy_png
    clean = images.finalize_output(comfy_png, max_pixels=MAX_PIXELS)
    assert b"KSampler" not in clean and b"prompt" not in clean and b"ComfyUI" not in clean
    image = assert_clean_rgb_png(clean)
    assert image.size == (48, 32) and image.getpixel((10, 10)) == (30, 140, 90)


def test_finalize_output_rewrites_an_rgb_png_without_decoding(forbid_decoding):
    """What ComfyUI's SaveImage writes (8-bit RGB, workflow in tEXt before and after IDAT) loses its
    text by a chunk rewrite; the pixel data is byte for byte ComfyUI's."""
    text = PngImagePlugin.PngInfo()
    text.add_text("prompt", '{"3": {"class_type": "DDColor"}}')
    comfy_png = encode(noise((48, 32)), "PNG", pnginfo=text)
    iend = comfy_png.index(b"IEND") - 4
    comfy_png = comfy_png[:iend] + png_chunk(b"tEXt", b"workflow\x00{}") + comfy_png[iend:]
    idat = comfy_png.index(b"IDAT") - 4
    pixels = comfy_png[idat : comfy_png.index(b"tEXtworkflow") - 4]
    forbid_decoding()
    clean = images.finalize_output(comfy_png, max_pixels=MAX_PIXELS)
    assert b"DDColor" not in clean and b"workflow" not in clean and pixels in clean
    refused_output = pytest.raises(PermanentTaskError)
    with refused_output:
        images.finalize_output(comfy_png, max_pixels=48 * 32 - 1)


def test_finalize_output_passes_a_png_with_only_pixel_chunks_through(forbid_decoding):
    """What SaveImageWebsocket sends has no text to drop: the same bytes go on, no copy made."""
    websocket_png = encode(noise((48, 32)), "PNG")
    forbid_decoding()
    assert images.finalize_output(websocket_png, max_pixels=MAX_PIXELS) is websocket_png


def test_finalize_output_drops_bytes_after_iend(forbid_decoding):
    png = encode(noise((48, 32)), "PNG")
    forbid_decoding()
    assert images.finalize_output(png + b"trailing workflow", max_pixels=MAX_PIXELS) == png


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(b"", id="empty"),
        pytest.param(b'{"error": "out of memory"}', id="json"),
        pytest.param(encode(noise((64, 64)), "PNG")[:500], id="truncated"),
        pytest.param(png_header_only(30000, 30000), id="bomb"),
    ],
)
def test_broken_output_is_a_permanent_failure(data: bytes):
    with pytest.raises(PermanentTaskError) as caught:
        images.finalize_output(data, max_pixels=MAX_PIXELS)
    assert caught.value.code == "output_invalid"


# --- compare and upload ---------------------------------------------------------------------------


def test_side_by_side_puts_before_left_and_after_right(photo_bytes: bytes):
    after = encode(Image.new("RGB", (512, 512), (250, 20, 20)), "PNG")
    compare = decoded(images.side_by_side(photo_bytes, after))
    assert compare.format == "JPEG"
    assert compare.size == (512 + images.COMPARE_GAP + 512, 512)
    left_red, left_green, _ = compare.getpixel((100, 256))
    assert abs(left_red - left_green) < 20  # the grey original
    red, green, blue = compare.getpixel((900, 256))
    assert red > 220 and green < 50 and blue < 50


def test_side_by_side_fits_max_side_with_a_shared_height():
    before = encode(Image.new("L", (640, 427), 100), "JPEG")
    after = encode(Image.new("RGB", (1280, 854), "green"), "PNG")
    compare = decoded(images.side_by_side(before, after, max_side=600))
    width, height = compare.size
    assert width <= 600 and height <= 600
    assert height == (600 - images.COMPARE_GAP) * 427 // (2 * 640)  # both widths fill the side
    assert width >= 600 - 2


def test_side_by_side_of_a_tall_pair_is_bounded_by_height():
    tall = encode(Image.new("L", (100, 3000), 100), "PNG")
    compare = decoded(images.side_by_side(tall, tall, max_side=1000))
    assert compare.size == (33 + images.COMPARE_GAP + 33, 1000)


def test_fit_for_upload_returns_small_data_unchanged(photo_bytes: bytes):
    assert images.fit_for_upload(photo_bytes, max_bytes=len(photo_bytes)) is photo_bytes


def test_fit_for_upload_gets_under_the_limit():
    data = encode(noise((1200, 900)), "PNG", compress_level=1)
    limit = 400_000
    assert len(data) > 3_000_000
    fitted = images.fit_for_upload(data, max_bytes=limit)
    assert len(fitted) <= limit
    image = decoded(fitted)
    assert image.format == "JPEG" and image.mode == "RGB"
    assert image.width < 1200 and abs(image.width / image.height - 1200 / 900) < 0.01


def test_fit_for_upload_gives_up_on_an_impossible_limit(photo_bytes: bytes):
    with pytest.raises(PermanentTaskError) as caught:
        images.fit_for_upload(photo_bytes, max_bytes=50)
    assert caught.value.code == "output_invalid"


# --- the worker's recheck ----------------------------------------------------------------------------
def test_recheck_passes_intake_output_through_unchanged(photo_bytes):
    prepared = images.prepare_input(photo_bytes, **LIMITS).data
    assert images.recheck_input(prepared, **LIMITS) is prepared


def test_recheck_trusts_bytes_whose_digest_matches_without_decoding(photo_bytes, forbid_decoding):
    cmyk = encode(Image.new("CMYK", (16, 16)), "JPEG")
    digest = images.content_digest(cmyk)
    forbid_decoding()
    assert images.recheck_input(cmyk, **LIMITS, digest=digest) is cmyk


def test_recheck_normalises_anything_else(photo_bytes):
    cmyk = encode(Image.new("CMYK", (16, 16)), "JPEG")
    for digest in ("", images.content_digest(photo_bytes)):  # none recorded, or not these bytes'
        checked = images.recheck_input(cmyk, **LIMITS, digest=digest)
        assert checked.startswith(b"\x89PNG") and Image.open(io.BytesIO(checked)).mode == "RGB"


@pytest.mark.parametrize("converted", [False, True])
def test_recheck_refuses_a_truncated_input(photo_bytes, converted: bool):
    source = encode(noise((64, 64)).convert("RGBA"), "PNG") if converted else photo_bytes
    prepared = images.prepare_input(source, **LIMITS)
    assert prepared.converted is converted
    whole = prepared.data
    with pytest.raises(Refused) as caught:
        images.recheck_input(whole[: len(whole) // 2], **LIMITS, digest=images.content_digest(whole))
    assert caught.value.code == "image_broken"


# --- sampling a big output -------------------------------------------------------------------------
@pytest.mark.parametrize("mode", ["RGB", "L", "RGBA"])
def test_png_top_rows_is_the_top_of_the_image_inflated_alone(mode: str):
    image = noise((50, 40)).convert(mode)
    strip = images.png_top_rows(encode(image, "PNG"), 8)
    top = decoded(strip)
    assert top.size == (50, 8) and top.mode == mode
    assert top.tobytes() == image.crop((0, 0, 50, 8)).tobytes()
    assert decoded(images.png_top_rows(encode(image, "PNG"), 400)).size == (50, 40)  # no more than there is


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"not a png",
        encode(Image.new("RGB", (9, 9)), "JPEG"),
        encode(Image.new("P", (9, 9)), "PNG"),
        encode(noise((64, 64)), "PNG")[:300],
    ],
)
def test_png_top_rows_declines_what_it_cannot_sample(data: bytes):
    assert images.png_top_rows(data, 8) is None
