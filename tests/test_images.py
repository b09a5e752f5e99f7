"""Decoding real and hostile files: each bad file is a LineError with its own class, never a crash."""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image

from pisar.errors import LineError
from pisar.worker.images import ImageLimits, decode_line_image
from tests.hostile import hostile_files, png_bytes

LIMITS = ImageLimits(max_pixels=89_478_485, min_side=4, max_side=16_384)


def test_real_scans_decode_to_rgb(print_lines: Path, handwritten: Path) -> None:
    for path in [*sorted(print_lines.glob("*.png"))[:20], *handwritten.glob("*.jpg")]:
        image = decode_line_image(path.read_bytes(), LIMITS)
        assert image.mode == "RGB"
        assert image.size == Image.open(path).size


def test_each_hostile_file_gets_its_error_class(print_lines: Path) -> None:
    real = sorted(print_lines.glob("*.png"))[0]
    for name, (data, expected) in hostile_files(real).items():
        if expected == "MissingObject":
            continue  # a storage outcome, covered by the storage and end-to-end tests
        with pytest.raises(LineError) as caught:
            decode_line_image(data, LIMITS)
        assert caught.value.error_class == expected, name
        assert str(caught.value), f"{name}: the error needs a message"


def test_exif_orientation_is_applied() -> None:
    image = Image.new("L", (200, 40), 255)
    exif = image.getexif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise on display
    import io

    buffer = io.BytesIO()
    image.convert("RGB").save(buffer, format="JPEG", exif=exif)
    assert decode_line_image(buffer.getvalue(), LIMITS).size == (40, 200)


def test_limits_come_from_settings() -> None:
    tight = ImageLimits(max_pixels=1000, min_side=4, max_side=16_384)
    with pytest.raises(LineError) as caught:
        decode_line_image(png_bytes(Image.new("L", (100, 40))), tight)
    assert caught.value.error_class == "DecompressionBomb"


def variants(line: Image.Image) -> dict[str, bytes]:
    """The same real line saved the ways archives and scanners do; each must decode to the same page."""
    import io

    import numpy as np

    gray = line.convert("L")

    def saved(image: Image.Image, fmt: str, **options: object) -> bytes:
        buffer = io.BytesIO()
        image.save(buffer, format=fmt, **options)
        return buffer.getvalue()

    ink = Image.eval(gray, lambda v: 255 - v)  # alpha: opaque where the ink is
    rgba = Image.merge("RGBA", (*Image.new("RGB", gray.size, 0).split(), ink))  # black ink, transparent page
    palette = gray.convert("P")
    palette.info["transparency"] = palette.getpixel((0, 0))  # the page colour (a corner) is transparent
    blank = Image.new("L", gray.size, 255)
    return {
        # Ink no darker than 40/255: plain 16->8 bit conversion clips all of it to white.
        "16-bit.png": saved(Image.fromarray(np.maximum(np.asarray(gray), 40).astype(np.uint16) * 257), "PNG"),
        "rgba-transparent-page.png": saved(rgba, "PNG"),
        "la.png": saved(Image.merge("LA", (Image.new("L", gray.size, 0), ink)), "PNG"),
        "palette-transparent.png": saved(palette, "PNG", transparency=palette.info["transparency"]),
        "cmyk.jpg": saved(gray.convert("RGB").convert("CMYK"), "JPEG", quality=95),
        "1-bit.png": saved(gray.point(lambda v: 255 if v > 128 else 0).convert("1"), "PNG"),
        "animated.gif": saved(gray, "GIF", save_all=True, append_images=[blank]),
        "multipage.tif": saved(gray, "TIFF", save_all=True, append_images=[blank]),
        "png-named.jpg": saved(gray, "PNG"),
    }


def test_every_image_mode_keeps_its_text(print_lines: Path) -> None:
    import numpy as np

    line = Image.open(sorted(print_lines.glob("*.png"))[3])
    expected = np.asarray(line.convert("L"), dtype=np.float64)
    limits = ImageLimits(89_478_485, 4, 16_384)
    for name, data in variants(line).items():
        decoded = decode_line_image(data, limits)
        assert decoded.mode == "RGB" and decoded.size == line.size, name
        got = np.asarray(decoded.convert("L"), dtype=np.float64)
        # Same page: ink where the ink was (first frame of multi-frame files), within JPEG and 1-bit rounding.
        assert np.abs(got - expected).mean() < 12, name
        assert got.min() < 100 and np.median(got) > 200, name  # dark text on a light page, not blank, not inverted
