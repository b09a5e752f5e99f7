"""A reading's words: what ALTO ``String`` and PAGE ``Word`` elements hold, and what per-word confidence is aligned with.

One definition for the worker, which stores a confidence per word, and the exports, which write
one element per word: the text is split at whitespace after the characters XML cannot hold are
replaced one for one (``pisar.xml_text``), so a control character a byte-level decoder emitted
between two words (``\\x1c``-``\\x1f`` count as whitespace to Python) cannot make the worker count
two words where the export writes one. Replacements keep every offset, so a word's span in the
scrubbed text is its span in the stored one.
"""

from __future__ import annotations

import re

from pisar.xml_text import REPLACEMENT, forbidden_characters

_WORD = re.compile(r"\S+")


def word_spans(text: str) -> list[tuple[int, int]]:
    """(start, end) character offsets of each word of ``text``, in order."""
    return [match.span() for match in _WORD.finditer(forbidden_characters.sub(REPLACEMENT, text))]


def words(text: str) -> list[str]:
    """The words of ``text`` (already scrubbed for XML, or not: the spans are the same)."""
    return [text[start:end] for start, end in word_spans(text)]


def confident_words(text: str, per_word: list[float] | None, line: float | None) -> list[tuple[str, float | None]]:
    """The words of ``text``, each with its confidence: the stored per-word one, or the line's where
    none was stored (a result from before per-word confidence) or the counts disagree."""
    found = words(text)
    if per_word is None or len(per_word) != len(found):
        return [(word, line) for word in found]
    return list(zip(found, per_word, strict=True))
