"""Before a worker takes any message: can this node serve the model it was started for?

With ``--model``/``PISAR_MODEL`` the worker knows what it must serve, so `pisar worker` checks it
first and refuses to start (one line, ``FatalError.exit_code``) instead of taking shards it would
only give back: the device it is told to use, and the model folder's files. The device is asked
in a fresh interpreter on a CUDA build, so the process that forks the pool never initialises CUDA.
Without a preload model the first shard's reader load finds the same problems, and the worker
stops taking work then (``worker/serving.py``).
"""

from __future__ import annotations

from pisar.errors import FatalError
from pisar.settings import Settings


def check_node(settings: Settings) -> None:
    """Raise ``FatalError`` (or a ``PisarError`` for a model that is not there) if this node cannot serve ``settings.model``."""
    if not settings.model:
        return
    from pisar import model_ref
    from pisar.processor import check_model_files

    ref = model_ref.resolve(model_ref.parse(settings.model))
    model_ref.verify_folder(ref)
    check_model_files(ref)
    if settings.device == "cpu":  # always there; asking about CUDA would import torch into the parent
        return
    from pisar.reader.devices import device_problem

    problem = device_problem(settings.device)
    if problem:
        raise FatalError(f"this node cannot serve {ref}: {problem}")
