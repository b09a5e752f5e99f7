"""Pisar's reader as the tests drive it in-process: on the CPU, in fp32, for a model folder."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from pisar import model_ref
from pisar.reader import DecodeOptions, GenerationOptions, LineOutcome, LineReader


def reader_for(folder: Path, decoder: str = "auto", graphs: str = "auto") -> LineReader:
    options = DecodeOptions(decoder=decoder, graphs=graphs)
    return LineReader(model_ref.resolve(model_ref.parse(str(folder))), device="cpu", dtype="float32", options=options)


def read_outcomes(reader: LineReader, pixels: np.ndarray, overrides: dict[str, Any] | None = None) -> list[LineOutcome]:
    """One batch read with generation ``overrides`` (as a campaign stores them): an outcome per line."""
    return reader.read(pixels, GenerationOptions.from_overrides(overrides)).outcomes


def options(overrides: dict[str, Any] | None = None) -> GenerationOptions:
    return GenerationOptions.from_overrides(overrides)
