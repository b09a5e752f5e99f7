"""Keys and texts are data: shown to a person, they must not act on the terminal or the log.

An object key may hold any character S3 or a file system allows: newlines that forge log lines,
ESC sequences that rewrite a terminal, rich markup like ``[link=...]``. Wherever a key (or any
text from the archive) is printed for a reader, it goes through ``printable`` first; machine
formats (JSONL, CSV, the catalog) keep it exactly.
"""

from __future__ import annotations


def printable(value: str) -> str:
    """``value`` with every non-printable character (C0/C1 controls, line separators) as its escape."""
    if value.isprintable():
        return value
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode("ascii") for c in value)


def shown(value: object) -> str:
    """``printable`` and rich-markup-escaped: for a cell of a rich table or a rich ``print``."""
    from rich.markup import escape

    return escape(printable(str(value)))
