"""Ground truth beside line images (``NAME.png`` + ``NAME.gt.txt``, the kraken / OCRopus convention)
and the label normalizations that training and evaluation apply to both sides.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import PurePosixPath

from pisar.errors import ConfigError, LineError
from pisar.storage import Storage

#: The reference model card's map (``naf``): pre-reform letters to their modern forms.
NAF = str.maketrans({"ѣ": "е", "Ѣ": "Е", "і": "и", "І": "И"})

NORMALIZATIONS: dict[str, Callable[[str], str]] = {
    "none": lambda text: text,
    "naf": lambda text: text.translate(NAF),
}

#: OCRopus names binarized and normalized line images NAME.bin.png / NAME.nrm.png.
_PROCESSING_SUFFIXES = (".bin", ".nrm")


def normalizer(name: str) -> Callable[[str], str]:
    """The normalization called ``name``; a ``ConfigError`` names the choices otherwise."""
    try:
        return NORMALIZATIONS[name]
    except KeyError:
        raise ConfigError(f"unknown normalization {name!r}: use one of {', '.join(NORMALIZATIONS)}") from None


def gt_key(image_key: str) -> str:
    """``dir/NAME.bin.png`` -> ``dir/NAME.gt.txt``; also ``NAME.png`` and ``NAME.nrm.png``."""
    path = PurePosixPath(image_key)
    stem = path.with_suffix("")
    if stem.suffix in _PROCESSING_SUFFIXES:
        stem = stem.with_suffix("")
    return f"{stem}.gt.txt"


def read_transcription(storage: Storage, image_key: str) -> str | None:
    """The one-line transcription of an image, or ``None`` if it has none."""
    try:
        data = storage.read(gt_key(image_key))
    except LineError:
        return None
    return data.decode("utf-8").strip()


def read_layout_transcriptions(storage: Storage, line_keys: list[str]) -> list[str | None]:
    """The text each page line's PAGE/ALTO file already holds for it (``TextEquiv`` / ``String``s;
    Transkribus and eScriptorium exports often carry the ground truth), ``None`` where it has none.

    Keys come grouped by layout (byte order), so each file is read and parsed once.
    """
    from pisar.layout import read_layout, split_line_key

    texts: list[str | None] = []
    held_key, lines = None, {}
    for key in line_keys:
        layout_key, line_id = split_line_key(key)
        if layout_key != held_key:
            held_key = layout_key
            try:
                lines = {line.line_id: line.text for line in read_layout(storage.read(layout_key), layout_key).lines}
            except LineError:
                lines = {}
        text = lines.get(line_id)
        texts.append(text.strip() if text and text.strip() else None)
    return texts
