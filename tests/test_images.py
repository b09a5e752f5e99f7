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
