"""Training data: ground-truth pairs from folders or S3, a fixed held-out split, synthetic lines.

The split is decided by a hash of each key, so a line is held out (or not) whatever the order,
the machine or the other files present: held-out lines are never trained on.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, ImageDraw, ImageFilter, ImageFont

from pisar.errors import LineError, NotFound
from pisar.groundtruth import read_transcription
from pisar.images import ImageLimits, decode_line_image
from pisar.settings import Settings
from pisar.storage import Storage, list_images, open_storage


@dataclass(frozen=True)
class Sample:
    """One labelled line image; ``key`` is relative to its source, so the split ignores where it lives."""

    key: str
    text: str
    image: Image.Image


def is_held_out(key: str, share: float) -> bool:
    """True for about ``share`` of keys, decided by the key alone (sha1), never by order."""
    digest = int(hashlib.sha1(key.encode("utf-8")).hexdigest()[:8], 16)
    return digest / 0x1_0000_0000 < share


def load_pairs(sources: Iterable[str], settings: Settings, normalize: Callable[[str], str]) -> tuple[list[Sample], int]:
    """Every image with a non-empty ``NAME.gt.txt`` under the sources; returns samples and skips."""
    limits = ImageLimits.from_settings(settings)
    samples: list[Sample] = []
    skipped = 0
    for source in sources:
        storage = open_storage(source, settings)
        keys = list_images(storage).keys

        def load(key: str, storage: Storage = storage) -> Sample | None:  # binds this loop's storage
            text = read_transcription(storage, key)
            if not text:
                return None
            try:
                relative = key.removeprefix(getattr(storage, "prefix", "")).lstrip("/")
                return Sample(relative, normalize(text), decode_line_image(storage.read(key), limits))
            except LineError:
                return None

        with ThreadPoolExecutor(16) as pool:
            for sample in pool.map(load, keys):
                if sample is None:
                    skipped += 1
                else:
                    samples.append(sample)
    if not samples:
        raise NotFound("no line images with NAME.gt.txt transcriptions in the training data")
    return samples, skipped


def split(samples: list[Sample], share: float) -> tuple[list[Sample], list[Sample]]:
    """(train, held-out) by the key hash."""
    held = [s for s in samples if is_held_out(s.key, share)]
    return [s for s in samples if not is_held_out(s.key, share)], held


# Book faces first: the print-lines scans are serif type, so serif faces are drawn more often.
FACES = (
    "DejaVuSerif.ttf",
    "DejaVuSerif.ttf",
    "DejaVuSerif-Bold.ttf",
    "DejaVuSerif-Italic.ttf",
    "DejaVuSerif-BoldItalic.ttf",
    "DejaVuSans.ttf",
    "DejaVuSans-Bold.ttf",
    "DejaVuSans-Oblique.ttf",
)


def covers(path: Path, text: str) -> bool:
    """True when the face has a glyph for every letter of ``text`` (none renders as the missing-glyph box).

    A face without Cyrillic would draw boxes under a real label and teach the decoder to guess.
    """
    font = ImageFont.truetype(str(path), 24)

    def shape(ch: str) -> bytes:
        canvas = Image.new("L", (48, 48), 0)
        ImageDraw.Draw(canvas).text((8, 8), ch, font=font, fill=255)
        return canvas.tobytes()

    missing = shape("\uffff")
    return all(shape(ch) != missing for ch in set(text) if not ch.isspace())


def font_paths(alphabet: str = "") -> list[Path]:
    """DejaVu faces shipped with matplotlib that cover the alphabet (Russian with pre-reform letters)."""
    import matplotlib

    from pisar.random_model import ALPHABET

    folder = Path(matplotlib.get_data_path()) / "fonts" / "ttf"
    usable = {name for name in set(FACES) if (folder / name).exists() and covers(folder / name, alphabet or ALPHABET)}
    if not usable:
        raise NotFound(f"no DejaVu face under {folder} covers the alphabet; synthetic lines need one")
    return [folder / name for name in FACES if name in usable]


class SyntheticLines:
    """Renders text lines in the look of binarized book scans: serif faces, varied size and ink.

    ``aspect`` (the model input's width / height) pads short renderings on the right instead of
    letting the processor stretch three words across a full line: letters keep the shape they have
    in real lines. ``span_share`` of the samples are 1-4 word spans, which teach where a line starts
    and ends faster than full lines do.
    """

    def __init__(self, texts: list[str], fonts: list[Path] | None = None, *, aspect: float | None = None, span_share: float = 0.0) -> None:
        if not texts:
            raise NotFound("the synthetic text file has no lines")
        self.texts = texts
        self.fonts = fonts or font_paths()
        self.aspect = aspect
        self.span_share = span_share
        self._cache: dict[tuple[Path, int], ImageFont.FreeTypeFont] = {}

    def _font(self, path: Path, size: int) -> ImageFont.FreeTypeFont:
        if (path, size) not in self._cache:
            self._cache[(path, size)] = ImageFont.truetype(str(path), size)
        return self._cache[(path, size)]

    def _text(self, rng: random.Random) -> str:
        text = rng.choice(self.texts)
        words = text.split()
        if len(words) > 1 and rng.random() < self.span_share:
            count = rng.randint(1, min(4, len(words)))
            start = rng.randint(0, len(words) - count)
            text = " ".join(words[start : start + count])
        return text

    def sample(self, rng: random.Random) -> tuple[str, Image.Image]:
        """A random text rendered with a random face and size; deterministic for a seeded ``rng``."""
        text = self._text(rng)
        font = self._font(rng.choice(self.fonts), rng.randint(22, 40))
        left, top, right, bottom = font.getbbox(text)
        pad_x, pad_y = rng.randint(2, 16), rng.randint(2, 10)
        width, height = right - left + 2 * pad_x, bottom - top + 2 * pad_y
        if self.aspect:
            width = max(width, int(height * self.aspect * rng.uniform(0.8, 1.0)))
        image = Image.new("L", (width, height), 255)
        ImageDraw.Draw(image).text((pad_x - left, pad_y - top), text, font=font, fill=rng.randint(0, 60))
        if rng.random() < 0.5:
            image = image.filter(ImageFilter.GaussianBlur(rng.uniform(0.3, 1.0)))
        if rng.random() < 0.7:  # binarized like the print-lines scans
            threshold = rng.randint(110, 170)
            image = image.point(lambda v: 255 if v > threshold else 0)
        if rng.random() < 0.3:
            image = image.rotate(rng.uniform(-1.0, 1.0), expand=True, fillcolor=255)
        return text, image.convert("RGB")


def reshuffled_lines(texts: list[str], count: int, seed: int) -> list[str]:
    """The texts plus ``count`` new lines of their words in random order, with their length spread.

    Synthetic lines built only from the training split's words add variety to what the decoder
    sees without ever showing it a held-out transcription.
    """
    rng = random.Random(seed)
    words = [w for t in texts for w in t.split()]
    lengths = [len(t.split()) for t in texts if t.split()]
    if not words:
        return list(texts)
    return list(texts) + [" ".join(rng.choice(words) for _ in range(rng.choice(lengths))) for _ in range(count)]


def augment(image: Image.Image, rng: random.Random) -> Image.Image:
    """A plausible re-scan of a real line: margins, scale, slant, blur and ink threshold vary; nothing is cut off.

    Keeps a small training set from being memorised by line identity; deterministic for a seeded ``rng``.
    """
    gray = image.convert("L")
    # Only ever add margins: scans are cropped tight, and cutting into a glyph would make the label wrong.
    slant_room = int(0.08 * gray.height) + 1  # what the largest shear below moves a corner by
    left, right = rng.randint(slant_room, slant_room + 16), rng.randint(slant_room, slant_room + 16)
    top, bottom = rng.randint(0, 12), rng.randint(0, 12)
    canvas = Image.new("L", (gray.width + left + right, gray.height + top + bottom), 255)
    canvas.paste(gray, (left, top))
    scale_x, scale_y = rng.uniform(0.85, 1.15), rng.uniform(0.85, 1.15)
    canvas = canvas.resize((max(8, int(canvas.width * scale_x)), max(8, int(canvas.height * scale_y))), Image.Resampling.BILINEAR)
    if rng.random() < 0.5:
        shear = rng.uniform(-0.15, 0.15)
        canvas = canvas.transform(canvas.size, Image.Transform.AFFINE, (1, shear, -shear * canvas.height / 2, 0, 1, 0), fillcolor=255)
    if rng.random() < 0.5:
        canvas = canvas.filter(ImageFilter.GaussianBlur(rng.uniform(0.2, 1.0)))
    if rng.random() < 0.5:
        threshold = rng.randint(100, 180)
        canvas = canvas.point(lambda v: 255 if v > threshold else 0)
    return canvas.convert("RGB")
