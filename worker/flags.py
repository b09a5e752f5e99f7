"""Generation-failure flags: signs that a line's text is not a reading, kept with the line.

- ``max_length``: generation stopped at the token limit, not at an end token, so the text
  is probably cut short, or the model never found the end of the line.
- ``repetition``: the text ends in one n-gram (n <= 8 tokens) repeated at least 3 times and
  covering at least 6 tokens. This is the loop a seq2seq model falls into on a line it cannot
  read. A run of one token counts from 6 in a row, so dotted leaders ("....") are flagged only
  when long.

Flags do not make a line an error: the text is kept, and ``pisar retry --flag`` (issue 7) or a
reviewer decides.
"""

from __future__ import annotations

from collections.abc import Sequence

MAX_LENGTH = "max_length"
REPETITION = "repetition"
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


def generation_flags(text_tokens: Sequence[int], ended: bool) -> tuple[str, ...]:
    """The flags of one generated line: its text tokens, and whether it ended with an end token."""
    flags = []
    if not ended:
        flags.append(MAX_LENGTH)
    if repeats_at_end(text_tokens):
        flags.append(REPETITION)
    return tuple(flags)
