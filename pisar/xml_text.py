"""Text that XML 1.0 can hold: model output and keys go into ALTO and PAGE files through here.

A byte-level tokenizer can emit control characters, and a key may hold any character a file
system allows. XML 1.0 forbids most C0 controls, lone surrogates and U+FFFE/U+FFFF outright; a
file with one is not well-formed and every archive system rejects it. They are replaced with
U+FFFD and counted, so the export can say what it changed instead of failing or hiding it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

REPLACEMENT = "\ufffd"
# Everything outside XML 1.0's Char production: #x9 | #xA | #xD | [#x20-#xD7FF] | [#xE000-#xFFFD] | [#x10000-#x10FFFF]
forbidden_characters = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")


@dataclass
class XmlScrubber:
    """Replaces what XML forbids and keeps count, over one export."""

    characters: int = 0
    values: int = 0

    def __call__(self, value: str) -> str:
        clean, count = forbidden_characters.subn(REPLACEMENT, value)
        if count:
            self.characters += count
            self.values += 1
        return clean

    def describe(self) -> str | None:
        """One sentence for the operator, or None when nothing was replaced."""
        if not self.characters:
            return None
        return f"replaced {self.characters} characters XML cannot hold with U+FFFD in {self.values} values (texts or keys)"
