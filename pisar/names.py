"""Campaign names: what one may be, the default one from a source, and the only way one becomes a path.

A name is typed by an operator and then printed in logs, tables and Flower and used in file names
(``review-NAME``, ``eval-NAME``), so it is held to a plain shape: 1 to ``MAX_LENGTH`` characters,
letters (any script: ``фонд-1`` is fine) and digits, with ``.``, ``_`` and ``-`` inside, starting
with a letter or digit. That leaves no path separator, no ``..``, no control or escape character
and no markup to reach a file system or a terminal.
"""

from __future__ import annotations

import re
from pathlib import Path, PurePosixPath
from urllib.parse import urlsplit

from pisar.errors import ConfigError
from pisar.safe_text import printable

MAX_LENGTH = 100
RULE = f"1 to {MAX_LENGTH} letters, digits, '.', '_' or '-', starting with a letter or digit"
_NAME = re.compile(r"[^\W_][\w.-]*")  # \w is Unicode letters, digits and '_'
_NOT_ALLOWED = re.compile(r"[^\w.-]+")


def check_name(name: str) -> str:
    """``name`` if it is a valid campaign name; ``ConfigError`` with one readable line otherwise."""
    if len(name) <= MAX_LENGTH and _NAME.fullmatch(name):
        return name
    shown = printable(name[:40]) + ("..." if len(name) > 40 else "")
    why = "is empty" if not name else f"has {len(name)} characters" if len(name) > MAX_LENGTH else "has characters a name may not hold"
    raise ConfigError(f"campaign name '{shown}' {why}: a name is {RULE}")


def default_name(source: str) -> str:
    """A campaign name from a source: the folder's name, or ``bucket-prefix`` for S3, made valid.

    Characters a name may not hold become ``-``; ``ConfigError`` if nothing usable is left (say
    ``--name``).
    """
    if source.startswith("s3://"):
        raw = source.removeprefix("s3://").rstrip("/").replace("/", "-")
    elif source.startswith(("http://", "https://", "iiif:")):  # a IIIF manifest: its volume's part of the URL
        parts = urlsplit(source.removeprefix("iiif:"))
        path = re.sub(r"/(manifest|collection)(\.json)?$", "", parts.path.rstrip("/"), flags=re.IGNORECASE)
        raw = PurePosixPath(path).stem or (parts.hostname or "")
    elif Path(source).is_file():  # a manifest file, or a file of manifest URLs
        raw = Path(source).stem
    else:
        raw = Path(source).expanduser().resolve().name  # "." and "lines/" name their folder too
    name = _NOT_ALLOWED.sub("-", raw).strip(".-_")[:MAX_LENGTH].rstrip(".-_")
    if not name:
        raise ConfigError(f"no campaign name can be made from {printable(source)!r}: give one with --name ({RULE})")
    return check_name(name)


def output_folder(prefix: str, name: str, base: Path | None = None) -> Path:
    """``base/PREFIX-NAME`` for a command's default output (``review-vol-1``), never outside ``base`` (the working folder).

    Names in the catalog are valid (``check_name`` guards their creation), but a catalog written by
    an older Pisar may hold any text: whatever a name holds, it is reduced here to the characters
    a name may hold, so the folder is always one new entry directly in ``base``.
    """
    base = (base or Path.cwd()).resolve()
    safe = _NOT_ALLOWED.sub("_", name).lstrip(".")[:MAX_LENGTH] or "campaign"
    folder = (base / f"{prefix}-{safe}").resolve()
    if folder.parent != base:  # cannot happen with the characters above; kept as the rule's own check
        raise ConfigError(f"refusing to write outside {base}: {printable(str(folder))}")
    return folder
