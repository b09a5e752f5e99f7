"""Text every catalog can hold, the same way in every mode.

A byte-level BPE decoder (the RoBERTa vocabulary of TrOCR models) can emit any byte, NUL included,
and a decoder written in Python can hand over lone surrogates. Postgres refuses NUL in a text
column (``DataError``), and neither Postgres nor SQLite can encode a lone surrogate, while SQLite
stores NUL as it is: left alone, the same line would be stored in ``pisar run`` and fail a shard in
a distributed campaign. So both are replaced with U+FFFD before any write, and the line says so
with the ``unstorable_text`` flag. Exports scrub what XML forbids on top of this (``pisar/xml_text.py``).
"""

from __future__ import annotations

import re

REPLACEMENT = "\ufffd"
_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")


def storable(value: str) -> tuple[str, int]:
    """``value`` with NUL and lone surrogates replaced by U+FFFD, and how many were replaced."""
    return _UNSTORABLE.subn(REPLACEMENT, value)


def is_storable(value: str) -> bool:
    """True when ``storable`` would change nothing."""
    return _UNSTORABLE.search(value) is None
