"""The confidence rule, in one place: how sure the model was of a line and of each word.

``FORMULA`` names it, and every campaign stores that name. Each generated token's probability is
the softmax of the model's raw logits (before logits processors) at the chosen token. Then:

- a line with text tokens: the geometric mean of their probabilities, and their minimum
  (``min_token_prob``); start, end and padding tokens are left out;
- an empty reading that ended (no text token before the end token): the end token's probability
  at the step it was chosen, the first, as both: how sure the model was that the line is empty;
- an empty reading that never ended (it ran to ``max_length`` on tokens that decode to nothing,
  special ones included): the geometric mean and minimum over every token it generated (v2 left
  it ``None``, so confidence filters passed over it);
- a word: the geometric mean of the probabilities of its tokens (``word_confidences``, below).

Every value is in (0, 1]: a probability that underflows a float is held at the smallest positive
one (``FLOOR``), so an ``ok`` line always has a confidence and the least sure sort first.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Callable, Sequence

from pisar.words import word_spans

FORMULA = "geomean_text_token_prob_v3"  # v3: an empty reading that never ended has one too
FLOOR = sys.float_info.min  # the smallest positive normal float: exp() of a very negative log-probability


def probability(log_prob: float) -> float:
    """``exp(log_prob)`` held in (0, 1]."""
    return min(1.0, max(FLOOR, math.exp(log_prob)))


def geometric_mean(log_probs: Sequence[float]) -> float:
    """The geometric mean of the probabilities whose logs are given (at least one), held in (0, 1]."""
    return probability(sum(log_probs) / len(log_probs))


def line_confidence(
    text_log_probs: Sequence[float], end_log_prob: float | None, generated_log_probs: Sequence[float]
) -> tuple[float, float]:
    """``(confidence, min_token_prob)`` of one line (the module docstring's rule).

    ``text_log_probs``: its text tokens'; ``end_log_prob``: its first end token's, or ``None`` if it
    never ended; ``generated_log_probs``: every token it generated, for a reading with no text.
    """
    if text_log_probs:
        return geometric_mean(text_log_probs), probability(min(text_log_probs))
    if end_log_prob is not None:
        sure = probability(end_log_prob)
        return sure, sure
    if generated_log_probs:
        return geometric_mean(generated_log_probs), probability(min(generated_log_probs))
    return FLOOR, FLOOR  # nothing generated at all: no evidence, the least sure of all


# Per-word confidence: the geometric mean of the probabilities of the tokens that make each word.
#
# ALTO's ``WC`` and PAGE's ``Word/TextEquiv@conf`` are per word, and a reviewer looks for the one
# doubtful word, not the doubtful line. A word's tokens are found by where each token's text falls
# in the line's text: token ``k`` adds as many characters as decoding tokens ``k - 3 .. k`` gives
# more than decoding ``k - 3 .. k - 1`` (one batched call to the tokenizer per batch of lines; both
# windows start at the same token, so whatever a decoder does at a sequence's start, such as
# dropping a leading space or showing a character's trailing byte as U+FFFD, cancels, and the cost is
# a few short decodes per token instead of every prefix of the line). A token that covers no character (the second byte of a
# character that a byte-level vocabulary spells in two tokens) goes with the token before it; one
# that covers only whitespace (a space token before a word) goes with the word after it; one that
# spans two words (a tokenizer whose tokens cross spaces) counts in both. The words are
# ``pisar.words``', the same the exports write, so there is one confidence per exported word.
WINDOW = 4  # tokens decoded together to learn what the last one adds: a character spans at most 4 bytes
Decoder = Callable[[list[list[int]]], list[str]]  # token id rows -> texts, special tokens skipped


def word_confidences(
    decode: Decoder, rows: Sequence[Sequence[int]], log_probs: Sequence[Sequence[float]], texts: Sequence[str]
) -> list[tuple[float, ...]]:
    """Each line's per-word confidences, aligned with ``pisar.words.words(text)``.

    ``rows``: each line's text token ids (no special tokens); ``log_probs``: their log-probabilities;
    ``texts``: each line's decoded text. A line without words gets ``()``.
    """
    spans_of = [word_spans(text) for text in texts]
    windows: list[list[int]] = []
    for row, spans in zip(rows, spans_of, strict=True):
        if spans:
            for k in range(len(row)):
                first = max(0, k - WINDOW + 1)
                windows += [list(row[first : k + 1]), list(row[first:k])]
    lengths = iter([len(text) for text in decode(windows)] if windows else [])
    result = []
    for row, logs, text, spans in zip(rows, log_probs, texts, spans_of, strict=True):
        if not spans:
            result.append(())
            continue
        ends, end = [], 0
        for _ in row:
            end += max(0, next(lengths) - next(lengths))
            ends.append(end)
        result.append(_per_word(spans, _token_words(spans, ends, len(text)), logs))
    return result


def _token_words(spans: list[tuple[int, int]], ends: list[int], length: int) -> list[list[int]]:
    """The words each token belongs to, from the character offset where each token's text ends."""
    owners: list[list[int]] = []
    start = 0
    for end in ends:
        end = min(max(end, start), length)  # a prefix decoded longer or shorter than the text's own: kept in order and in range
        touched = [index for index, (left, right) in enumerate(spans) if left < end and right > start]
        if start == end:  # no character of its own: it completes the token before it
            touched = owners[-1] if owners else [0]
        elif not touched:  # only whitespace: it opens the word after it
            touched = [next((index for index, (left, _) in enumerate(spans) if left >= end), len(spans) - 1)]
        owners.append(touched)
        start = end
    return owners


def _per_word(spans: list[tuple[int, int]], owners: list[list[int]], log_probs: Sequence[float]) -> tuple[float, ...]:
    """The geometric mean over each word's tokens (``geometric_mean``); a word no token reached takes the line's."""
    sums, counts = [0.0] * len(spans), [0] * len(spans)
    for words, log_p in zip(owners, log_probs, strict=True):
        for index in words:
            sums[index] += log_p
            counts[index] += 1
    line = geometric_mean(log_probs) if len(log_probs) else FLOOR
    return tuple(probability(s / c) if c else line for s, c in zip(sums, counts, strict=True))
