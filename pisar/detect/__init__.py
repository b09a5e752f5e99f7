"""Line detection: page scans with no layout in, regions and lines in reading order out.

A ``Detector`` is one module per model, chosen by name (``PISAR_DETECTOR``): ``blla`` (kraken's
baseline segmenter, the default, ``blla.py``) today; an archive's own RF-DETR or YOLO line model is
a new module and one ``register_detector`` call, or a ``module:Class`` path in the setting with no
code changed. The registry holds import paths, so naming a detector imports only it. What a
detector finds (``segmentation.py``) is stored as PAGE XML (``page_xml.py``), so the rest of Pisar
reads a detected page exactly as it reads a PAGE file an archive supplied.

The detectors need the ``detect`` extra (``make setup`` installs it); without it, naming one
raises ``DetectionUnavailable`` with the one line that says what to install.
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Callable
from typing import Any, Protocol

from PIL import Image

from pisar.detect.segmentation import DetectedLine, DetectedRegion, PageSegmentation
from pisar.errors import ConfigError, FatalError
from pisar.plugins import import_object

#: How to install what detection needs (kraken's post-processing and the CoreML reader). kraken is
#: installed without its own requirements: they pin older scipy, rich and safetensors than Pisar's
#: and ask for torchvision, none of which the modules Pisar uses import (README, "Line detection").
INSTALL_HINT = 'pip install -c constraints.txt -e ".[detect]" && pip install --no-deps -c constraints.txt kraken'


class DetectionUnavailable(ConfigError):
    """Detection was asked for where its libraries are not installed."""


class Detector(Protocol):
    """What the detect worker needs of a line detector."""

    name: str

    def describe(self) -> str:
        """What finds the lines, recorded with each page: name, version and model digest."""

    def detect(self, image: Image.Image) -> PageSegmentation:
        """The regions and lines of one decoded scan, lines in reading order; raises on failure."""

    def close(self) -> None:
        """Let go of worker processes and memory."""


DetectorFactory = Callable[..., Detector]  # (*, model: str | None, device: str, polygon_workers: int) -> Detector

_DETECTORS: dict[str, str | DetectorFactory] = {"blla": "pisar.detect.blla:BllaDetector"}


def register_detector(name: str, factory: str | DetectorFactory) -> None:
    """Make ``name`` a detector: a ``module:Class`` path (imported when first used) or a factory."""
    _DETECTORS[name] = factory


def detector_names() -> list[str]:
    return sorted(_DETECTORS)


def check_available(name: str) -> None:
    """Refuse, in one line, a detector that is not known or whose libraries are not installed."""
    factory = _factory(name)
    if isinstance(factory, str) and factory.startswith("pisar.detect.blla:"):
        missing = [module for module in ("kraken", "shapely", "skimage", "coremltools") if importlib.util.find_spec(module) is None]
        if missing:
            raise DetectionUnavailable(f"line detection needs {', '.join(missing)}: {INSTALL_HINT}")


def load_detector(name: str, *, model: str | None = None, device: str = "cpu", polygon_workers: int = 1) -> Detector:
    """The detector called ``name`` (``device`` ``auto``: CUDA where torch sees it); one that cannot
    load is this node's failure (``FatalError``)."""
    check_available(name)
    if device in ("auto", "cuda"):
        import torch

        if device == "cuda" and not torch.cuda.is_available():
            raise FatalError("PISAR_DEVICE=cuda, but torch sees no CUDA device on this node")
        device = "cuda" if torch.cuda.is_available() else "cpu"
    factory = _factory(name)
    if isinstance(factory, str):
        factory = import_object(factory, f"detector {name!r}")
    made: Any = factory(model=model, device=device, polygon_workers=polygon_workers or os.cpu_count() or 1)
    return made


def _factory(name: str) -> str | DetectorFactory:
    factory = _DETECTORS.get(name, name if ":" in name else None)
    if factory is None:
        raise ConfigError(f"unknown detector {name!r}; known: {', '.join(detector_names())}, or a module:Class path")
    return factory


__all__ = [
    "DetectedLine",
    "DetectedRegion",
    "Detector",
    "DetectionUnavailable",
    "PageSegmentation",
    "check_available",
    "load_detector",
    "register_detector",
]
