"""Cutting a text line out of its page scan, by the line's polygon or its box.

``--crop polygon`` (the default): the axis-aligned box around the line's ``Coords``, clamped to the
scan, with every pixel outside the polygon set to white (the mask drawn by PIL's
``ImageDraw.polygon(points, fill=255, outline=255)`` in the box's coordinates, so the polygon's own
border is kept). ``--crop box`` keeps the whole box. A line with only a baseline gets a box around
it: ``baseline_height`` pixels above the baseline's highest point and a quarter of that below its
lowest, the room a line of text takes. The result is an 8-bit ``L`` or ``RGB`` line image, decoded
and preprocessed like any line image afterwards.
"""

from __future__ import annotations

from PIL import Image, ImageDraw

from pisar.errors import NoGeometry
from pisar.layout import LayoutLine

CROPS = ("polygon", "box")


def crop_line(scan: Image.Image, line: LayoutLine, crop: str = "polygon", baseline_height: int = 60) -> Image.Image:
    """The line's pixels from ``scan`` (``L`` or ``RGB``); ``NoGeometry`` when its geometry encloses nothing."""
    if crop not in CROPS:
        raise ValueError(f"crop must be one of {', '.join(CROPS)}, not {crop!r}")
    if line.polygon:
        box = _clamped(line.box, scan.size)  # type: ignore[arg-type]
    elif line.baseline:
        xs, ys = [x for x, _ in line.baseline], [y for _, y in line.baseline]
        box = _clamped((min(xs), min(ys) - baseline_height, max(xs) + 1, max(ys) + 1 + baseline_height // 4), scan.size)
    else:
        raise NoGeometry("the TextLine has neither Coords nor a Baseline")
    left, top, right, bottom = box
    if right <= left or bottom <= top:
        raise NoGeometry(f"the line's geometry encloses no pixel of the {scan.size[0]}x{scan.size[1]} scan")
    cut = scan.crop(box)
    if crop == "box" or len(line.polygon) < 3:
        return cut
    mask = Image.new("L", cut.size, 0)
    ImageDraw.Draw(mask).polygon([(x - left, y - top) for x, y in line.polygon], fill=255, outline=255)
    white = Image.new(cut.mode, cut.size, 255 if cut.mode == "L" else (255, 255, 255))
    return Image.composite(cut, white, mask)


def _clamped(box: tuple[int, int, int, int], size: tuple[int, int]) -> tuple[int, int, int, int]:
    width, height = size
    left, top, right, bottom = box
    return max(0, left), max(0, top), min(width, right), min(height, bottom)
