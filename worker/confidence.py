"""The confidence rule, in one place: how sure the model was of a line and of each word.

``pisar.constants.CONFIDENCE_FORMULA`` names it (``geomean_text_token_prob_v3``), and every campaign
stores that name. Each generated token's probability is the softmax of the model's raw logits
(before logits processors) at the chosen token. Then:

- a line with text tokens: the geometric mean of their probabilities, and their minimum
  (``min_token_prob``); start, end and padding tokens are left out;
- an empty reading that ended (no text token before the end token): the end token's probability
  at the step it was chosen, the first, as both: how sure the model was that the line is empty;
- an empty reading that never ended (it ran to ``max_length`` on tokens that decode to nothing,
  special ones included): the geometric mean and minimum over every token it generated (v2 left
  it ``None``, so confidence filters passed over it);
- a word: the geometric mean of the probabilities of its tokens (``worker/word_confidence.py``).

Every value is in (0, 1]: a probability that underflows a float is held at the smallest positive
one (``FLOOR``), so an ``ok`` line always has a confidence and the least sure sort first.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Sequence

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
