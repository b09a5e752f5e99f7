"""Back-ends: what actually runs a model behind ``LineReader``, one module each, chosen by name.

A back-end loads a ``VisionEncoderDecoderModel`` checkpoint its own way and answers a few
questions (``Backend``). ``torch`` (``torch_backend.py``) is today's; an ONNX Runtime or OpenVINO
back-end for CPU-only nodes is a new module and one ``register_backend`` call, and nothing in the
worker changes. The registry holds import paths, not classes, so naming a back-end imports only it
(torch stays out of a process that never reads a line).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

import numpy as np
from PIL import Image

from pisar.errors import FatalError
from pisar.model_ref import ModelRef
from pisar.plugins import import_object
from pisar.reader.options import DecodeOptions, GenerationOptions
from pisar.reader.reading import DecodeSteps, Reading


class Backend(Protocol):
    """What ``LineReader`` needs of a loaded model. Errors are raised, never returned: the reader
    splits a batch that fails and names the one line that cannot be read (``memory.py``)."""

    steps: DecodeSteps

    def describe(self, options: GenerationOptions) -> str:
        """How it reads with ``options``: device, dtype, decode loop, e.g. ``cpu:float32:greedy-loop``."""

    def prepare(self, image: Image.Image) -> np.ndarray:
        """One line image (``L`` or ``RGB``) as model input (C, H, W); thread-safe (the fetch pool calls it)."""

    def read(self, pixels: np.ndarray, options: GenerationOptions) -> list[Reading]:
        """Read a batch of prepared lines; one reading per line, in order."""

    def is_out_of_memory(self, exc: BaseException) -> bool:
        """Whether ``exc`` says the batch was too large for the device."""

    def recover(self) -> None:
        """Let go of what a batch that ran out of memory left behind."""

    def fitted_batch(self, options: GenerationOptions, cap: int, share: float) -> int | None:
        """The lines a batch may hold within ``share`` of the device's free memory, or ``None``
        where there is no device memory to fit (the reader then uses its CPU default)."""


BackendFactory = Callable[..., Backend]  # (ref, *, device, dtype, options: DecodeOptions) -> Backend

_BACKENDS: dict[str, str | BackendFactory] = {"torch": "pisar.reader.torch_backend:TorchBackend"}


def register_backend(name: str, factory: str | BackendFactory) -> None:
    """Make ``name`` a back-end: a ``module:Class`` path (imported when first used) or a factory."""
    _BACKENDS[name] = factory


def load_backend(name: str, ref: ModelRef, *, device: str, dtype: str, options: DecodeOptions) -> Backend:
    """Load ``ref`` with the back-end called ``name``: a registered name, or a ``module:Class`` path
    (a back-end in a package of its own, named in ``PISAR_READER_BACKEND`` with no code changed).
    A back-end that is not there is this node's failure (``FatalError``), never a shard's."""
    factory = _BACKENDS.get(name, name if ":" in name else None)
    if factory is None:
        raise FatalError(f"unknown reader back-end {name!r}; known: {', '.join(_BACKENDS)}, or a module:Class path")
    if isinstance(factory, str):
        factory = import_object(factory, f"reader back-end {name!r}")
    made: Any = factory(ref, device=device, dtype=dtype, options=options)
    return made
