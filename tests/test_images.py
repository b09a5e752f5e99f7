"""Decoding real and hostile files: each bad file is a LineError with its own class, never a crash."""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image

from pisar.errors import LineError
from pisar.images import ImageLimits, decode_line, decode_line_image
from tests.helpers.hostile import hostile_files, png_bytes, variants

LIMITS = ImageLimits(max_pixels=89_478_485, min_side=4, max_side=16_384)


def test_real_scans_decode_to_rgb(print_lines: Path, rgb_scans: Path) -> None:
    for path in [*sorted(print_lines.glob("*.png"))[:20], *rgb_scans.glob("*.jpg")]:
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
    decoded = decode_line(buffer.getvalue(), LIMITS)
    assert decoded.image.size == (40, 200)
    assert decoded.note == "EXIF orientation 6 applied"


def test_limits_come_from_settings() -> None:
    tight = ImageLimits(max_pixels=1000, min_side=4, max_side=16_384)
    with pytest.raises(LineError) as caught:
        decode_line_image(png_bytes(Image.new("L", (100, 40))), tight)
    assert caught.value.error_class == "DecompressionBomb"


def test_every_image_mode_keeps_its_text(print_lines: Path) -> None:
    import numpy as np

    line = Image.open(sorted(print_lines.glob("*.png"))[3])
    expected = np.asarray(line.convert("L"), dtype=np.float64)
    limits = ImageLimits(89_478_485, 4, 16_384)
    notes = {}
    for name, data in variants(line).items():
        read = decode_line(data, limits)
        decoded, notes[name] = read.image, read.note
        assert decoded.mode == "RGB" and decoded.size == line.size, name
        got = np.asarray(decoded.convert("L"), dtype=np.float64)
        # Same page: ink where the ink was (first frame of multi-frame files), within JPEG and 1-bit rounding.
        assert np.abs(got - expected).mean() < 12, name
        assert got.min() < 100 and np.median(got) > 200, name  # dark text on a light page, not blank, not inverted
    # What was done to read a file is recorded with its line (the catalog's `line.note`).
    assert notes["animated.gif"] == "first of 2 frames (GIF)"
    assert notes["multipage.tif"] == "first of 2 frames (TIFF)"
    assert notes["16-bit.png"].endswith("scaled to 8 bits")
    for name in ("rgba-transparent-page.png", "la.png", "palette-transparent.png"):
        assert notes[name] == "transparency composited on white", name
    for name in ("cmyk.jpg", "1-bit.png", "png-named.jpg"):
        assert notes[name] is None, name


def resident_mb() -> float:
    import os

    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def test_hostile_files_leave_no_memory_behind(print_lines: Path) -> None:
    """Decoding every hostile and odd file again and again, in threads as a worker does, holds memory flat.

    A leak per bad file (an unclosed decoder, a cached frame) would grow by megabytes each round here,
    and across the shards of a weeks-long campaign.
    """
    from concurrent.futures import ThreadPoolExecutor

    from tests.helpers.hostile import extreme_shapes, rotated_by_exif

    scans = sorted(print_lines.glob("*.png"))
    line = Image.open(scans[3])
    files = [data for data, _ in hostile_files(scans[0]).values()]
    files += [*variants(line).values(), rotated_by_exif(line), *extreme_shapes().values()]

    def decode(data: bytes) -> str:
        try:
            return decode_line(data, LIMITS).image.mode
        except LineError as exc:
            return exc.error_class

    with ThreadPoolExecutor(4) as pool:
        for _ in range(5):  # warm up: thread arenas, PIL plugin imports
            list(pool.map(decode, files))
        before = resident_mb()
        for _ in range(40):
            outcomes = list(pool.map(decode, files))
        grown = resident_mb() - before
    print(f"resident memory {before:.1f} MB, grew {grown:.1f} MB over 40 rounds of {len(files)} files")
    assert len(set(outcomes)) > 5  # the rounds really met the different outcomes
    assert grown < 24, f"resident memory grew {grown:.1f} MB over 40 rounds of {len(files)} files"
