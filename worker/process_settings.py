"""Process-wide knobs, set once per process by whoever runs shards (a Celery pool child, ``pisar run``, ``pisar train``).

Kept apart from the reader so that setting them imports no torch: PIL's decompression-bomb limit is
a global, and torch's thread count is set only where torch is (or is about to be) loaded.
"""

from __future__ import annotations

from typing import Any


def apply_process_settings(settings: Any) -> None:
    """PIL's pixel limit from ``PISAR_MAX_IMAGE_PIXELS``; torch's intra-op threads from ``PISAR_TORCH_THREADS`` when set."""
    from PIL import Image

    Image.MAX_IMAGE_PIXELS = settings.max_image_pixels
    if settings.torch_threads:
        from pisar.reader.devices import set_threads  # torch: only where it is about to read or train

        set_threads(settings.torch_threads)
