"""Export files appear whole or not at all: written beside the target, renamed into place on success."""

from __future__ import annotations

import os
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any


@contextmanager
def atomic_output(output: str | Path, binary: bool = False) -> Iterator[IO[Any]]:
    """A handle on a temporary file beside ``output``, renamed to it on success and removed on failure; ``-`` is stdout."""
    if str(output) == "-":
        yield sys.stdout
        return
    target = Path(output)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", dir=target.parent)
    try:
        with os.fdopen(fd, "wb") if binary else os.fdopen(fd, "w", encoding="utf-8", newline="") as handle:
            yield handle
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
