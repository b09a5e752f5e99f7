"""The table-lookup preprocessor gives the model's own processor output bit for bit, on real scans."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from pisar import model_ref
from pisar.images import ImageLimits, decode_line
from pisar.processor import load_processor
from pisar.reader.preprocess import LinePreprocessor
from tests.helpers.paths import DEMO_MODEL

LIMITS = ImageLimits(89_478_485, 4, 16_384)


@pytest.mark.parametrize("which", ["tiny-dinov2", "demo-vit"])
def test_fast_preprocessing_equals_the_processor(which: str, tiny_model: Path, print_lines: Path, rgb_scans: Path) -> None:
    processor = load_processor(model_ref.resolve(model_ref.parse(str(tiny_model if which == "tiny-dinov2" else DEMO_MODEL))))
    fast = LinePreprocessor.build(processor.image_processor)
    assert fast is not None, "both reference-style processors must get the fast path"
    paths = [*sorted(print_lines.glob("*.png"))[:40], *sorted(rgb_scans.glob("*.jpg"))]
    modes = set()
    for path in paths:
        decoded = decode_line(path.read_bytes(), LIMITS)
        modes.add(decoded.line.mode)
        expected = processor(images=decoded.image, return_tensors="np").pixel_values[0]  # what the model card feeds
        got = fast.normalize(torch.from_numpy(np.stack([fast(decoded.line)])))[0].numpy()
        assert got.dtype == expected.dtype and np.array_equal(got, expected), path.name
    assert modes == {"L", "RGB"}  # greyscale scans take the one-channel path, colour photos the other


def test_a_processor_it_cannot_reproduce_keeps_the_slow_path(tiny_model: Path) -> None:
    processor = load_processor(model_ref.resolve(model_ref.parse(str(tiny_model))))
    cropping = type(processor.image_processor)(
        **{**processor.image_processor.to_dict(), "do_center_crop": True, "crop_size": {"height": 100, "width": 100}}
    )
    assert LinePreprocessor.build(cropping) is None


def test_cpu_normalization_in_the_fetch_threads_equals_the_device_lookup(tiny_model: Path, print_lines: Path, rgb_scans: Path) -> None:
    processor = load_processor(model_ref.resolve(model_ref.parse(str(tiny_model))))
    fast = LinePreprocessor.build(processor.image_processor)
    for path in [sorted(print_lines.glob("*.png"))[0], sorted(rgb_scans.glob("*.jpg"))[0]]:
        pixels = fast(decode_line(path.read_bytes(), LIMITS).line)
        on_device = fast.normalize(torch.from_numpy(np.stack([pixels])))[0].numpy()
        assert np.array_equal(fast.normalize_array(pixels), on_device), path.name
