"""Export files appear whole or not at all: written beside the target, renamed into place on success."""

from __future__ import annotations

import os
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any


def check_writable(output: str | Path) -> None:
    """Fail now, naming ``output``, if it could not be written later: before hours of work, not after.

    Tries what ``atomic_output`` will do (a temporary file beside it, its folder made if missing);
    ``ConfigError`` if the target is a folder, its folder cannot be made, or it is not writable.
    """
    from pisar.errors import ConfigError

    if str(output) == "-":
        return
    target = Path(output)
    if target.is_dir():
        raise ConfigError(f"output {target} is a folder; give a file name")
    if any(folder.exists() and not folder.is_dir() for folder in target.parents):
        raise ConfigError(f"cannot write the output {target}: a part of its folder is a file")
    try:
        fd, tmp = _temporary_beside(target)
    except OSError as exc:
        raise ConfigError(f"cannot write the output {target}: {exc.strerror or exc}") from None
    os.close(fd)
    Path(tmp).unlink()


def _temporary_beside(target: Path) -> tuple[int, str]:
    """A new temporary file in ``target``'s folder (made if missing); an ``OSError`` names ``target``, not the temporary file."""
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        return tempfile.mkstemp(prefix=f".{target.name}.", dir=target.parent)
    except OSError as exc:
        raise OSError(exc.errno, exc.strerror, str(target)) from None


@contextmanager
def atomic_output(output: str | Path, binary: bool = False) -> Iterator[IO[Any]]:
    """A handle on a temporary file beside ``output``, renamed to it on success and removed on failure; ``-`` is stdout."""
    if str(output) == "-":
        yield sys.stdout
        return
    target = Path(output)
    fd, tmp = _temporary_beside(target)
    try:
        with os.fdopen(fd, "wb") if binary else os.fdopen(fd, "w", encoding="utf-8", newline="") as handle:
            yield handle
        os.replace(tmp, target)
    except BaseException as exc:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(exc, OSError) and exc.filename in (tmp, None):
            raise OSError(exc.errno, exc.strerror, str(target)) from None
        raise
