"""Before a worker takes any message: can this node serve the model it was started for?

With ``--model``/``PISAR_MODEL`` the worker knows what it must serve, so `pisar worker` checks it
first and refuses to start (one line, ``FatalError.exit_code``) instead of taking shards it would
only give back: the device it is told to use, and the model folder's files. The device is asked
in a fresh interpreter on a CUDA build, so the process that forks the pool never initialises CUDA.
Without a preload model the first shard's engine load finds the same problems, and the worker
stops taking work then (``worker/stopping.py``).
"""

from __future__ import annotations

from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context

from pisar.errors import FatalError
from pisar.settings import Settings

PROBE_TIMEOUT_SECONDS = 120


def check_node(settings: Settings) -> None:
    """Raise ``FatalError`` (or a ``PisarError`` for a model that is not there) if this node cannot serve ``settings.model``."""
    if not settings.model:
        return
    from pisar import model_ref
    from pisar.processor import check_model_files

    ref = model_ref.resolve(model_ref.parse(settings.model))
    model_ref.verify_folder(ref)
    check_model_files(ref)
    problem = device_problem(settings.device)
    if problem:
        raise FatalError(f"this node cannot serve {ref}: {problem}")


def device_problem(preference: str) -> str | None:
    """Why the device ``preference`` names is not usable here, or ``None``."""
    if preference == "cpu":
        return None
    import torch

    if not torch.backends.cuda.is_built():
        return None if preference == "auto" else "PISAR_DEVICE=cuda but this PyTorch build has no CUDA support"
    with ProcessPoolExecutor(max_workers=1, mp_context=get_context("spawn")) as pool:
        return pool.submit(_probe_device, preference).result(timeout=PROBE_TIMEOUT_SECONDS)


def _probe_device(preference: str) -> str | None:
    """In the fresh interpreter: pick the device as the engine will."""
    from pisar.worker.engine import pick_device

    try:
        pick_device(preference)
    except FatalError as exc:
        return str(exc)
    return None
