"""Pisar's engine as the tests drive it in-process: on the CPU, in fp32, for a model folder."""

from __future__ import annotations

from pathlib import Path

from pisar import model_ref
from pisar.worker.engine import Engine


def engine_for(folder: Path, decoder: str = "auto") -> Engine:
    return Engine(model_ref.resolve(model_ref.parse(str(folder))), device="cpu", dtype="float32", decoder=decoder)
