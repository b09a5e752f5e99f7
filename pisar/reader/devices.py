"""Which torch device and dtype a reader runs on, and whether a device asked for is there.

Asked in a fresh interpreter by `pisar worker`'s preflight (``device_problem``), so the process
that forks the pool never initialises CUDA; asked again by the torch back-end when it loads.
"""

from __future__ import annotations

from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context

import torch

from pisar.errors import FatalError

_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
PROBE_TIMEOUT_SECONDS = 120


def pick_device(preference: str) -> torch.device:
    """CUDA when present (and not refused), else CPU; called only where lines are read (a worker's pool child)."""
    if preference == "cuda" or (preference == "auto" and torch.cuda.is_available()):
        if not torch.cuda.is_available():
            raise FatalError("PISAR_DEVICE=cuda but no CUDA device is visible")
        return torch.device("cuda")
    return torch.device("cpu")


def pick_dtype(preference: str, device: torch.device) -> torch.dtype:
    """bfloat16 on CUDA that supports it, float16 on older CUDA, float32 on CPU."""
    if preference != "auto":
        return _DTYPES[preference]
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.float32


def set_threads(threads: int) -> None:
    """torch's intra-op threads (``PISAR_TORCH_THREADS``)."""
    torch.set_num_threads(threads)


def device_problem(preference: str) -> str | None:
    """Why the device ``preference`` names is not usable here, or ``None``."""
    if preference == "cpu":
        return None
    if not torch.backends.cuda.is_built():
        return None if preference == "auto" else "PISAR_DEVICE=cuda but this PyTorch build has no CUDA support"
    with ProcessPoolExecutor(max_workers=1, mp_context=get_context("spawn")) as pool:
        return pool.submit(_probe_device, preference).result(timeout=PROBE_TIMEOUT_SECONDS)


def _probe_device(preference: str) -> str | None:
    """In the fresh interpreter: pick the device as the torch back-end will."""
    try:
        pick_device(preference)
    except FatalError as exc:
        return str(exc)
    return None
