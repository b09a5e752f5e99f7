"""Line preprocessing that gives bit-identical model input at a fraction of the cost.

A line processor (BitImageProcessor, ViTImageProcessor) resizes with PIL, then rescales and
normalizes every value of every channel. After the resize, those are pointwise maps of an 8-bit
value: 256 outcomes per channel. ``LinePreprocessor`` does the same PIL resize, on one channel
for a greyscale scan, and hands over 8-bit pixels. The model-side ``normalize`` looks each value
up in a (3, 256) table that the model's own processor computed. That has three effects:

- the fetch threads do about a third of the work, and the processor's float arithmetic is not
  repeated for each pixel;
- on a GPU, a batch travels as uint8, 4x smaller than float32, and the lookup runs there. On a CPU
  the lookup runs in the fetch threads (``normalize_array``): a batch-wide lookup in the generate
  thread would take CPU time from generate itself;
- the result equals the processor's output bit for bit. ``build`` checks this on probe images and
  returns ``None`` (use the processor) for any processor it cannot reproduce.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import torch
from PIL import Image

log = logging.getLogger(__name__)


class LinePreprocessor:
    """PIL resize to the model's fixed input size; rescale and normalize by table lookup."""

    def __init__(self, image_processor: Any) -> None:
        size = image_processor.size
        self.height, self.width = int(size["height"]), int(size["width"])
        self.resample = Image.Resampling(int(image_processor.resample))
        gradient = np.repeat(np.arange(256, dtype=np.uint8)[None, :, None], 3, axis=2)  # 1 x 256, R = G = B = v
        table = image_processor(images=Image.fromarray(gradient, "RGB"), do_resize=False, return_tensors="np").pixel_values[0]
        self.table = np.ascontiguousarray(table[:, 0, :], dtype=np.float32)  # (3, 256): channel, 8-bit value
        self._device_tables: dict[torch.device, torch.Tensor] = {}

    @classmethod
    def build(cls, image_processor: Any) -> LinePreprocessor | None:
        """The fast path for this processor, or ``None`` when it would not give the processor's exact output."""
        config = image_processor.to_dict()
        size = config.get("size") or {}
        if not config.get("do_resize") or not {"height", "width"} <= set(size) or config.get("do_center_crop") or config.get("do_pad"):
            return None
        if config.get("do_convert_rgb") is False:
            return None
        try:
            fast = cls(image_processor)
        except Exception as exc:  # any surprise in an unknown processor: fall back to it
            log.info("fast preprocessing unavailable for %s: %s", type(image_processor).__name__, exc)
            return None
        for probe in _probe_images():
            expected = image_processor(images=probe.convert("RGB"), return_tensors="np").pixel_values[0]
            got = fast.normalize(torch.from_numpy(np.stack([fast(probe)])))[0].numpy()
            if expected.shape != got.shape or not np.array_equal(expected, got):
                log.warning("fast preprocessing differs from %s; using the processor", type(image_processor).__name__)
                return None
        return fast

    def __call__(self, image: Image.Image) -> np.ndarray:
        """(3, H, W) uint8: the resized line, one channel resized and repeated for a greyscale scan."""
        if image.mode not in ("L", "RGB"):
            image = image.convert("RGB")
        resized = np.asarray(image.resize((self.width, self.height), resample=self.resample))
        if resized.ndim == 2:
            return np.broadcast_to(resized, (3, *resized.shape))
        return resized.transpose(2, 0, 1)

    def normalize_array(self, pixels: np.ndarray) -> np.ndarray:
        """One (3, H, W) uint8 line -> the processor's float32 values, on the CPU (in the fetch threads)."""
        if pixels.strides[0] == 0:  # a greyscale line: one index plane for all three channels
            return self.table[:, pixels[0]]
        return np.stack([self.table[channel][pixels[channel]] for channel in range(3)])

    def normalize(self, batch: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) uint8 on any device -> the processor's float32 values, by table lookup on that device."""
        table = self._device_tables.get(batch.device)
        if table is None:
            table = self._device_tables[batch.device] = torch.from_numpy(self.table).to(batch.device).reshape(-1)
        offsets = torch.arange(3, device=batch.device).view(1, 3, 1, 1) * 256
        return table[batch.long() + offsets]


def _probe_images() -> list[Image.Image]:
    """Odd sizes, both modes, every 8-bit value: what a line preprocessor must reproduce exactly."""
    rng = np.random.default_rng(0)
    colour = Image.fromarray(rng.integers(0, 256, size=(37, 301, 3), dtype=np.uint8), "RGB")
    grey = Image.fromarray(rng.integers(0, 256, size=(61, 1500), dtype=np.uint8), "L")
    ramp = Image.fromarray(np.tile(np.arange(256, dtype=np.uint8), (20, 4)), "L")
    return [colour, grey, ramp]
