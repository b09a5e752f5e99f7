"""Hostile line files, made with PIL at test time, and the error class each must produce."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image


def saved(image: Image.Image, fmt: str, **options: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()


def png_bytes(image: Image.Image) -> bytes:
    return saved(image, "PNG")


def hostile_files(real_png: Path) -> dict[str, tuple[bytes, str]]:
    """name -> (bytes, expected error class). ``missing.png`` is deleted after listing by the caller."""
    real = real_png.read_bytes()
    return {
        "missing.png": (real, "MissingObject"),
        "zero-bytes.png": (b"", "EmptyFile"),
        "truncated.png": (real[: len(real) // 2], "TruncatedImage"),
        "text-named.png": ("это не картинка, а текст\n".encode() * 20, "NotAnImage"),
        "one-pixel.png": (png_bytes(Image.new("L", (1, 1), 255)), "ImageTooSmall"),
        "wide-20000px.png": (png_bytes(Image.new("L", (20_000, 40), 255)), "ImageTooLarge"),
        # 12000 x 12000 = 144 M pixels claimed by a ~20 KB file: over PIL's 89.5 M limit.
        "bomb.png": (png_bytes(Image.new("1", (12_000, 12_000), 1)), "DecompressionBomb"),
    }


def variants(line: Image.Image) -> dict[str, bytes]:
    """The same real line saved the ways archives and scanners do; each must decode to the same page."""
    gray = line.convert("L")

    ink = Image.eval(gray, lambda v: 255 - v)  # alpha: opaque where the ink is
    rgba = Image.merge("RGBA", (*Image.new("RGB", gray.size, 0).split(), ink))  # black ink, transparent page
    palette = gray.convert("P")
    palette.info["transparency"] = palette.getpixel((0, 0))  # the page colour (a corner) is transparent
    blank = Image.new("L", gray.size, 255)
    return {
        # Ink no darker than 40/255: plain 16->8 bit conversion clips all of it to white.
        "16-bit.png": saved(Image.fromarray(np.maximum(np.asarray(gray), 40).astype(np.uint16) * 257), "PNG"),
        "rgba-transparent-page.png": saved(rgba, "PNG"),
        "la.png": saved(Image.merge("LA", (Image.new("L", gray.size, 0), ink)), "PNG"),
        "palette-transparent.png": saved(palette, "PNG", transparency=palette.info["transparency"]),
        "cmyk.jpg": saved(gray.convert("RGB").convert("CMYK"), "JPEG", quality=95),
        "1-bit.png": saved(gray.point(lambda v: 255 if v > 128 else 0).convert("1"), "PNG"),
        "animated.gif": saved(gray, "GIF", save_all=True, append_images=[blank]),
        "multipage.tif": saved(gray, "TIFF", save_all=True, append_images=[blank]),
        "png-named.jpg": saved(gray, "PNG"),
    }


def sepia_jpeg(path: Path) -> bytes:
    """A greyscale scan as a colour photograph: brown ink on yellowed paper, JPEG quality 90 (RGB, 4:2:0)."""
    from PIL import ImageOps

    gray = Image.open(path).convert("L")
    return saved(ImageOps.colorize(gray, black=(62, 38, 20), white=(236, 222, 188)), "JPEG", quality=90)


def rotated_by_exif(line: Image.Image) -> bytes:
    """A JPEG stored sideways with EXIF orientation 6 (rotate 90 degrees clockwise to display)."""
    exif = Image.new("L", (1, 1)).getexif()
    exif[0x0112] = 6
    return saved(line.convert("RGB").transpose(Image.Transpose.ROTATE_90), "JPEG", quality=95, exif=exif)


def extreme_shapes() -> dict[str, bytes]:
    """Legal but odd geometry: each is read (outcome ok), never a crash."""
    return {
        "long-thin-16000x8.png": png_bytes(Image.new("L", (16_000, 8), 255)),
        "tall-40x3000.png": png_bytes(Image.new("L", (40, 3000), 255)),
        "4x4.png": png_bytes(Image.new("L", (4, 4), 0)),
    }
