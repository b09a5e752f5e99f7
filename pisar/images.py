"""Bytes to an RGB line image, with every way a file can be bad turned into a ``LineError``."""

from __future__ import annotations

import io
import warnings
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from pisar.errors import (
    DecompressionBomb,
    EmptyFile,
    ImageTooLarge,
    ImageTooSmall,
    NotAnImage,
    TruncatedImage,
)
from pisar.settings import Settings

ORIENTATION_TAG = 0x0112


@dataclass(frozen=True)
class ImageLimits:
    """Geometry a line image must have to be worth sending to the model."""

    max_pixels: int
    min_side: int
    max_side: int

    @classmethod
    def from_settings(cls, settings: Settings) -> ImageLimits:
        return cls(settings.max_image_pixels, settings.min_image_side, settings.max_image_side)


@dataclass(frozen=True)
class DecodedLine:
    """A line image, 8-bit ``L`` (greyscale sources) or ``RGB``, and what was done to the file to get it.

    Keeping a greyscale scan in ``L`` lets the preprocessor resize one channel instead of three;
    ``image`` gives the RGB every model processor expects (the same pixels in each channel).
    """

    line: Image.Image
    notes: tuple[str, ...] = ()
    frames: int = 1  # the file's frames (pages of a multi-page TIFF); the one decoded is the asked one

    @property
    def image(self) -> Image.Image:
        """The line as RGB."""
        return self.line if self.line.mode == "RGB" else self.line.convert("RGB")

    @property
    def note(self) -> str | None:
        """The notes as one catalog string, or None when the file was read as it is."""
        return "; ".join(self.notes) or None


def decode_line_image(data: bytes, limits: ImageLimits) -> Image.Image:
    """Decode, apply EXIF orientation and convert to RGB; raise a ``LineError`` subclass if bad."""
    return decode_line(data, limits).image


#: Called with every image's bytes before it is decoded, line images and page scans alike: a
#: deployment's content scanner, or the test suite's stand-in for a native crash in a decoder
#: (``tests/helpers/fault_hooks``). An observer refuses a file by raising a ``LineError``: it becomes
#: the error of the line (or of every line cut from the scan), as a decoder's would.
BEFORE_DECODE: list[Callable[[bytes], None]] = []


def decode_line(data: bytes, limits: ImageLimits, frame: int = 0) -> DecodedLine:
    """``decode_line_image`` plus notes: which frame of a multi-frame file, orientation, bit depth, alpha.

    ``frame``: the 0-based frame to decode (a page of a multi-page TIFF); one the file lacks is ``NotAnImage``."""
    for observe in BEFORE_DECODE:
        observe(data)
    if not data:
        raise EmptyFile("the object has zero bytes")
    with warnings.catch_warnings():
        # PIL only warns between 1x and 2x its limit; any excess is a bomb here.
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            image = Image.open(io.BytesIO(data))
        except UnidentifiedImageError:
            raise NotAnImage(f"not a recognised image format ({len(data)} bytes starting {data[:8]!r})") from None
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
            raise DecompressionBomb(str(exc)) from None
        except (OSError, SyntaxError, ValueError, EOFError) as exc:  # a known format whose header breaks off (a JPEG's, at open)
            raise TruncatedImage(f"{len(data)} bytes: the header cannot be read: {exc}") from None
        frames = int(getattr(image, "n_frames", 1) or 1)  # counting reads headers, not pixels
        if frame:
            try:
                image.seek(frame)
            except (EOFError, OSError, ValueError):
                raise NotAnImage(f"the {image.format} file has {frames} frames, not a frame {frame + 1}") from None
        width, height = image.size
        if width * height > limits.max_pixels:
            raise DecompressionBomb(f"{width}x{height} = {width * height} pixels exceeds the limit of {limits.max_pixels}")
        if min(width, height) < limits.min_side:
            raise ImageTooSmall(f"{width}x{height} px: a side is under {limits.min_side} px")
        if max(width, height) > limits.max_side:
            raise ImageTooLarge(f"{width}x{height} px: a side is over {limits.max_side} px, not a text line")
        notes = []
        try:
            if frames > 1:  # GIF, APNG, WebP, multi-page TIFF
                notes.append(f"frame {frame + 1} of {frames} ({image.format})" if frame else f"first of {frames} frames ({image.format})")
            image.load()
        except (OSError, SyntaxError, ValueError, EOFError) as exc:
            raise TruncatedImage(f"{image.format} {width}x{height}: {exc}") from None
    orientation = image.getexif().get(ORIENTATION_TAG, 1)
    if orientation != 1:  # exif_transpose would read the tag again, and copy every upright image whole
        notes.append(f"EXIF orientation {orientation} applied")
        image = ImageOps.exif_transpose(image) or image
    line, conversion = _to_8bit(image)
    return DecodedLine(line, (*notes, conversion) if conversion else tuple(notes), frames)


def _has_alpha(image: Image.Image) -> bool:
    return image.mode in ("RGBA", "LA", "PA", "La", "RGBa") or (image.mode == "P" and "transparency" in image.info)


def _to_8bit(image: Image.Image) -> tuple[Image.Image, str | None]:
    """8-bit ``L`` for greyscale sources, ``RGB`` for the rest, dark ink on a light page whatever the mode;
    and a note when more than the colour model changed.

    PIL's plain ``convert("RGB")`` loses the text in two common archive formats: 16-bit greyscale
    (it clips every value above 255 to white) and transparency (transparent pixels keep their
    colour, usually black, so black ink on a transparent page becomes black on black).
    """
    if image.mode in ("RGB", "L"):
        return image, None
    if image.mode == "1":
        return image.convert("L"), None
    if image.mode in ("I;16", "I;16L", "I;16B", "I;16N", "I", "F"):
        values = np.asarray(image, dtype=np.float64)
        scaled = image.mode.startswith("I;16") or values.max(initial=0) > 255
        if scaled:
            values = values / 257.0  # 16-bit range down to 8 bits
        gray = Image.fromarray(np.clip(values, 0, 255).astype(np.uint8), mode="L")
        return gray, f"{image.mode} scaled to 8 bits" if scaled else None
    if _has_alpha(image):
        page = Image.new("RGBA", image.size, (255, 255, 255, 255))
        return Image.alpha_composite(page, image.convert("RGBA")).convert("RGB"), "transparency composited on white"
    return image.convert("RGB"), None
