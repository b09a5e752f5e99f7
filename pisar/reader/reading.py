"""What a reader returns: a typed reading per line, and the provenance of the batch it came from."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from pisar.errors import LineError
from pisar.flags import Flag
from pisar.reader.options import GenerationOptions
from pisar.words import confident_words


@dataclass(frozen=True)
class Reading:
    """What the model read on one line, and how sure it was (``confidence.py``)."""

    text: str
    confidence: float  # in (0, 1], for every reading, empty ones included
    min_token_prob: float
    token_count: int
    flags: tuple[Flag, ...] = ()  # signs that the text is not a plain reading (``pisar/flags.py``)
    word_confidences: tuple[float, ...] = ()  # one per word of ``pisar.words.words(text)``

    @property
    def words(self) -> list[tuple[str, float | None]]:
        """Each word of the text with its confidence, as the exports write them (the line's where a
        back-end gave none per word)."""
        return confident_words(self.text, list(self.word_confidences) or None, self.confidence)


#: A line's outcome: its reading, or the error that kept it from one (``GenerationFailed``).
LineOutcome = Reading | LineError


@dataclass(frozen=True)
class Provenance:
    """How a batch was read: the back-end's description (device, dtype, decode loop, encoder variant,
    e.g. ``cuda:bfloat16:greedy-loop+graphs``) and the generation options it ran with."""

    reader: str
    options: GenerationOptions


@dataclass(frozen=True)
class ReadBatch:
    """One ``LineReader.read``: an outcome per line, in the order of the pixels given, and its provenance."""

    outcomes: list[LineOutcome]
    provenance: Provenance

    def __iter__(self) -> Iterator[LineOutcome]:
        return iter(self.outcomes)

    def __len__(self) -> int:
        return len(self.outcomes)


@dataclass
class DecodeSteps:
    """Decoder work since the reader loaded: row-steps paid for, and those that produced a real token.

    A row that has ended keeps costing a step until every row of its batch has ended, so
    ``1 - useful / paid`` is the share of decoder work spent on finished lines; grouping lines of
    similar length into a batch (``worker/batches.py``) is what keeps it small.
    """

    paid: int = 0
    useful: int = 0
