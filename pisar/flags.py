"""Line flags: signs that a line's text is not a plain reading, kept with the line (``line.flags``).

- ``max_length``: generation stopped at the token limit, not at an end token, so the text
  is probably cut short, or the model never found the end of the line.
- ``repetition``: the text ends in one n-gram (n <= 8 tokens) repeated at least 3 times and
  covering at least 6 tokens. This is the loop a seq2seq model falls into on a line it cannot
  read. A run of one token counts from 6 in a row, so dotted leaders ("....") are flagged only
  when long.
- ``empty``: the text is empty or blank. An empty reading of an inked line is among the likeliest
  errors; its confidence is the probability the model gave the end token (``pisar/reader/confidence.py``).
- ``unstorable_text``: the model emitted characters no catalog can hold (NUL, lone surrogates);
  they were replaced with U+FFFD (``pisar/catalog/storable.py``).

Flags do not make a line an error: the text is kept, and ``pisar retry --flag`` or a reviewer decides.
"""

from __future__ import annotations

from collections.abc import Sequence
from enum import StrEnum


class Flag(StrEnum):
    """One sign that a line's text is not a plain reading (the module docstring)."""

    MAX_LENGTH = "max_length"
    REPETITION = "repetition"
    EMPTY = "empty"
    UNSTORABLE_TEXT = "unstorable_text"


MAX_LENGTH, REPETITION, EMPTY, UNSTORABLE_TEXT = Flag.MAX_LENGTH, Flag.REPETITION, Flag.EMPTY, Flag.UNSTORABLE_TEXT
KNOWN_FLAGS = tuple(Flag)

MAX_PERIOD = 8
MIN_REPEATS = 3
MIN_COVERED = 6


def repeats_at_end(tokens: Sequence[int]) -> bool:
    """True when the sequence ends in one n-gram repeated (see the module docstring)."""
    for period in range(1, MAX_PERIOD + 1):
        repeats = max(MIN_REPEATS, -(-MIN_COVERED // period))
        span = period * repeats
        if len(tokens) < span:
            break
        tail = list(tokens[-span:])
        if tail == tail[:period] * repeats:
            return True
    return False


def generation_flags(text: str, text_tokens: Sequence[int], ended: bool) -> tuple[Flag, ...]:
    """The flags of one generated line: its text, its text tokens, and whether it ended with an end token."""
    flags = []
    if not ended:
        flags.append(MAX_LENGTH)
    if repeats_at_end(text_tokens):
        flags.append(REPETITION)
    if not text.strip():
        flags.append(EMPTY)
    return tuple(flags)
