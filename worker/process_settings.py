"""Process-wide knobs, set once per process by whoever runs shards (a Celery pool child, ``pisar run``, ``pisar train``).

PIL's decompression-bomb limit is a global of the process. torch's thread count is the torch
back-end's to set, when it loads (``DecodeOptions.threads``), so setting these imports no torch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pisar.settings import Settings


def apply_process_settings(settings: Settings) -> None:
    """PIL's pixel limit from ``PISAR_MAX_IMAGE_PIXELS``."""
    from PIL import Image

    Image.MAX_IMAGE_PIXELS = settings.max_image_pixels
