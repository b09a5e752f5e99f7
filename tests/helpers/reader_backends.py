"""Back-ends the tests register behind ``LineReader`` (``pisar.reader.register_backend``), the documented seam.

- ``NulTail``: the torch back-end, every reading's text ending in NUL, as a byte-level decoder can
  emit (the catalog must store it or fail the shard cleanly).
- ``Scripted``: no model and no torch at all, the shape of a new back-end: a line's "reading" is
  a function of its pixels, and batches larger than ``fits`` run out of memory, so the reader's
  splitting can be watched without a GPU.
"""

from __future__ import annotations

import sys
from dataclasses import replace
from typing import Any

import numpy as np
from PIL import Image

from pisar.model_ref import ModelRef
from pisar.reader import DecodeOptions, DecodeSteps, GenerationOptions, Reading


def nul_tail(ref: ModelRef, **kwargs: Any) -> Any:
    from pisar.reader.torch_backend import TorchBackend

    class NulTail(TorchBackend):
        def read(self, pixel_values: np.ndarray, options: GenerationOptions | None = None) -> list[Reading]:
            return [replace(r, text=r.text + "\x00") for r in super().read(pixel_values, options)]

    return NulTail(ref, **kwargs)


class OutOfMemory(Exception):
    """The scripted device's out-of-memory error (torch's is ``torch.OutOfMemoryError``)."""


class Scripted:
    """A back-end without a model: each line reads as the mean of its pixels; ``fits`` lines a batch at most."""

    fits = 4
    poisoned = -1.0  # a line whose pixels are all this value fails to read

    def __init__(self, ref: ModelRef, *, device: str, dtype: str, options: DecodeOptions) -> None:
        self.ref, self.device, self.dtype = ref, device, dtype
        self.steps = DecodeSteps()
        self.batches: list[int] = []

    def describe(self, options: GenerationOptions) -> str:
        """Also says whether torch is in the process: a back-end that needs none must not bring it."""
        return f"scripted:{self.dtype}:{'torch' if 'torch' in sys.modules else 'no-torch'}"

    def prepare(self, image: Image.Image) -> np.ndarray:
        return np.asarray(image.convert("L").resize((16, 4)), dtype=np.float32)[None] / 255.0

    def read(self, pixels: np.ndarray, options: GenerationOptions) -> list[Reading]:
        self.batches.append(len(pixels))
        if len(pixels) > self.fits:
            raise OutOfMemory(f"{len(pixels)} lines do not fit")
        if any(bool((row == self.poisoned).all()) for row in pixels):
            raise ValueError("a line the model cannot read")
        return [Reading(f"{float(row.mean()):.3f}", confidence=0.5, min_token_prob=0.25, token_count=1) for row in pixels]

    def is_out_of_memory(self, exc: BaseException) -> bool:
        return isinstance(exc, OutOfMemory)

    def recover(self) -> None:
        pass

    def fitted_batch(self, options: GenerationOptions, cap: int, share: float) -> int | None:
        return min(cap, 32)  # as if measured on a device
