"""Hostile line files, made with PIL at test time, and the error class each must produce."""

from __future__ import annotations

import io
from pathlib import Path

from PIL import Image


def png_bytes(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


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
