"""``LineReader``: the one object the worker reads lines with, whatever runs the model behind it.

    reader = LineReader(ModelRef("models/demo", None), device="cpu", dtype="float32")
    batch = reader.read(np.stack([reader.prepare(image) for image in lines]), GenerationOptions.greedy())
    for outcome in batch: ...  # a Reading, or the LineError of a line that could not be read

No catalog, Celery or storage here, and no torch until a back-end that needs it is loaded.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
from PIL import Image

from pisar.model_ref import ModelRef, verify_folder
from pisar.reader.backends import Backend, load_backend
from pisar.reader.memory import BatchLimit
from pisar.reader.options import DecodeOptions, GenerationOptions
from pisar.reader.reading import DecodeSteps, Provenance, ReadBatch

if TYPE_CHECKING:
    from pisar.settings import Settings


class LineReader:
    """A model loaded by a back-end (``backends.py``), read in batches that fit its device."""

    def __init__(
        self,
        model: ModelRef,
        *,
        device: str = "auto",
        dtype: str = "auto",
        backend: str = "torch",
        options: DecodeOptions | None = None,
    ) -> None:
        self.model = model
        self.backend: Backend = load_backend(backend, model, device=device, dtype=dtype, options=options or DecodeOptions())
        self.limit = BatchLimit(self.backend)

    @property
    def steps(self) -> DecodeSteps:
        return self.backend.steps

    def describe(self, options: GenerationOptions | None = None) -> str:
        """How this reader reads with ``options``; stored with every shard it reads."""
        return self.backend.describe(options or GenerationOptions())

    def prepare(self, image: Image.Image) -> np.ndarray:
        """One decoded line image as the model's input; thread-safe, so the fetch pool runs it."""
        return self.backend.prepare(image)

    def batch_size(self, options: GenerationOptions, requested: int | None = None, cap: int = 512, share: float = 0.85) -> int:
        """Lines a batch should hold (``memory.py``)."""
        return self.limit.batch_size(options, requested, cap, share)

    def read(self, pixels: np.ndarray, options: GenerationOptions | None = None) -> ReadBatch:
        """Read a batch of prepared lines: one outcome per line, in order, and how they were read."""
        options = options or GenerationOptions()
        outcomes = self.limit.read(pixels, options)
        return ReadBatch(outcomes, Provenance(self.backend.describe(options), options))


class ReaderCache:
    """The reader last used in this process; campaigns on the same model and dtype share it."""

    def __init__(self, device: str, options: DecodeOptions | None = None, backend: str = "torch") -> None:
        self.device = device
        self.options = options or DecodeOptions()
        self.backend = backend
        self._key: tuple[str, str | None, str] | None = None
        self._reader: LineReader | None = None

    @classmethod
    def from_settings(cls, settings: Settings) -> ReaderCache:
        return cls(settings.device, DecodeOptions.from_settings(settings), settings.reader_backend)

    def get(self, model: ModelRef, dtype: str) -> LineReader:
        """The reader for ``model``; a folder is checked against its recorded content hash first."""
        key = (model.source, model.revision, dtype)
        if key != self._key or self._reader is None:
            self._reader = None  # free the old model before loading the next
            verify_folder(model)
            self._reader = LineReader(model, device=self.device, dtype=dtype, backend=self.backend, options=self.options)
            self._key = key
        return self._reader
