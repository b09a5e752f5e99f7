"""Per-word confidence (pisar/reader/confidence.py): each word's confidence is the geometric mean of
the probabilities of exactly the tokens that spell it, for byte-level and letter vocabularies, with
the words the exports write (``pisar.words``)."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
from transformers import AutoTokenizer

from pisar.catalog.codecs import decode_word_confidences as parse_confidences
from pisar.catalog.codecs import encode_word_confidences as format_confidences
from pisar.reader.confidence import word_confidences
from pisar.words import confident_words, word_spans, words

LINES = [
    "Въ лѣто 7128 году",  # Cyrillic: two bytes a letter, several tokens a word in a byte-level vocabulary
    "  сказал:  «да»  ",  # runs of spaces, leading and trailing
    "одно",
    "",
    "a\x1cb c",  # \x1c is whitespace to Python but not in XML (U+FFFD there): one word "a\x1cb", then "c"
    "нуль\x00внутри слова",
]


def oracle(tokenizer, text: str, log_probs: list[float]) -> tuple[list[int], list[float]]:
    """The token ids of ``text`` and each word's expected confidence, from the tokenizer's own character offsets."""
    encoded = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    spans = word_spans(text)
    members: list[list[float]] = [[] for _ in spans]
    for k, (s, e) in enumerate(encoded.offset_mapping):
        touched = [w for w, (left, right) in enumerate(spans) if s < right and e > left]
        if not touched and spans:  # whitespace alone (a space before a word): it opens the next word
            touched = [next((w for w, (left, _) in enumerate(spans) if left >= e), len(spans) - 1)]
        for w in touched:
            members[w].append(log_probs[k])
    return encoded.input_ids, [math.exp(sum(m) / len(m)) for m in members]


@pytest.fixture(scope="module", params=["bytes", "tiny"])
def tokenizer(request: pytest.FixtureRequest):
    """The byte-level vocabulary (any byte: every line) and the letter one (no digits, no controls: some lines)."""
    return request.param, AutoTokenizer.from_pretrained(request.getfixturevalue("byte_model" if request.param == "bytes" else "tiny_model"))


def test_each_word_gets_the_geometric_mean_of_its_own_tokens(tokenizer) -> None:
    name, tokenizer = tokenizer
    rows, texts, logs, expected = [], [], [], []
    for number, line in enumerate(LINES):
        ids = tokenizer(line, add_special_tokens=False).input_ids
        log_probs = [-0.05 * ((number + k) % 7) - 0.01 * k for k in range(len(ids))]  # distinct per token
        ids, wanted = oracle(tokenizer, line, log_probs)
        text = tokenizer.decode(ids, skip_special_tokens=True)
        if text != line:  # a letter vocabulary without some character: it cannot spell this line
            continue
        rows.append(ids), texts.append(text), logs.append(log_probs), expected.append(wanted)
    assert len(rows) == (len(LINES) if name == "bytes" else 3)
    got = word_confidences(lambda seqs: tokenizer.batch_decode(seqs, skip_special_tokens=True), rows, logs, texts)
    for text, mine, theirs in zip(texts, got, expected, strict=True):
        assert len(mine) == len(words(text)), text
        assert mine == pytest.approx(theirs, rel=1e-9), text


def test_a_character_spelled_in_two_tokens_counts_once_in_its_word() -> None:
    """A byte-level decoder shows a lone first byte as U+FFFD: the second byte's token adds no
    character and goes with the first's word, not with the next word."""
    vocabulary = {1: b"\xd0", 2: b"\xb0", 3: b" ", 4: b"b"}

    def decode(seqs: list[list[int]]) -> list[str]:
        return [b"".join(vocabulary[t] for t in seq).decode("utf-8", errors="replace") for seq in seqs]

    (got,) = word_confidences(decode, [[1, 2, 3, 4]], [[math.log(0.5), math.log(0.8), math.log(0.9), math.log(0.6)]], ["а b"])
    assert got == pytest.approx((math.sqrt(0.5 * 0.8), math.sqrt(0.9 * 0.6)))  # the space token opens "b"


def test_no_words_no_confidences_and_the_stored_form_round_trips() -> None:
    assert word_confidences(lambda seqs: [""] * len(seqs), [[5], []], [[-0.1], []], ["  ", ""]) == [(), ()]
    assert parse_confidences(format_confidences((0.98765, 0.5))) == [0.9877, 0.5]
    assert format_confidences(()) == "" and parse_confidences("") == []
    assert parse_confidences(None) is None and format_confidences(None) is None


def test_an_export_falls_back_to_the_line_where_no_word_confidence_matches() -> None:
    assert confident_words("a b", [0.9, 0.8], 0.7) == [("a", 0.9), ("b", 0.8)]
    assert confident_words("a b", None, 0.7) == [("a", 0.7), ("b", 0.7)]  # a result from before per-word confidence
    assert confident_words("a b", [0.9], 0.7) == [("a", 0.7), ("b", 0.7)]


def test_words_are_the_ones_xml_keeps() -> None:
    assert words("a\x1cb c") == ["a\x1cb", "c"] and "a\x1cb c".split() == ["a", "b", "c"]
    assert words(" x  y ") == ["x", "y"] and words("") == []


def test_the_engine_stores_a_confidence_per_word(byte_model: Path, print_lines: Path) -> None:
    """Through the real engine on real lines: one per word, within (0, 1], and the line's own when it has one word."""
    import numpy as np

    from pisar import model_ref
    from pisar.images import ImageLimits, decode_line
    from pisar.reader import LineReader
    from tests.helpers.reading import read_outcomes

    engine = LineReader(model_ref.resolve(model_ref.parse(str(byte_model))), device="cpu", dtype="float32")
    paths = sorted(print_lines.glob("*.png"))[:8]
    limits = ImageLimits(89_478_485, 4, 16_384)
    pixels = np.stack([engine.prepare(decode_line(p.read_bytes(), limits).line) for p in paths])
    for result in read_outcomes(engine, pixels):
        assert len(result.word_confidences) == len(words(result.text))
        assert all(0 < c <= 1 for c in result.word_confidences)
        if len(result.word_confidences) == 1 and result.text == result.text.strip():
            assert result.word_confidences[0] == pytest.approx(result.confidence)
