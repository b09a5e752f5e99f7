"""``module:Class`` paths, as the registries of reader back-ends and line detectors take them.

A registry holds import paths rather than classes, so naming one back-end or detector imports
only it (torch, kraken), and a deployment can name its own class in a setting with no code changed.
"""

from __future__ import annotations

import importlib
from typing import Any

from pisar.errors import FatalError


def import_object(path: str, what: str) -> Any:
    """The object a ``module:attribute`` path names; ``FatalError`` (this node cannot serve) naming
    ``what`` when it cannot be imported."""
    module, _, attribute = path.partition(":")
    try:
        return getattr(importlib.import_module(module), attribute)
    except (ImportError, AttributeError) as exc:
        raise FatalError(f"{what} cannot be imported: {exc}") from None
