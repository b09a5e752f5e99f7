"""IIIF Image API 2.x and 3.0: an image's ``info.json``, and the URL of a region at a size the server allows.

Pisar asks for pixels at full resolution (a line is 40-100 px tall on a scan; the model wants 182):
``max`` (3.0) or ``full`` (2.x) unless the server caps the size by ``maxWidth``, ``maxHeight`` or
``maxArea``, when it asks for the largest size within them and scales the layout to it. Requests go
to the service URL the manifest names, never to the ``id`` an ``info.json`` claims (a server could
otherwise send a worker elsewhere).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from pisar.iiif.presentation import UnreadableManifest, as_list, load_json

INFO_MAX_BYTES = 1 << 20


class UnreadableInfo(UnreadableManifest):
    """An image's ``info.json`` is not an Image API description (no width and height)."""


@dataclass(frozen=True)
class ImageInfo:
    """What Pisar needs of an image service: its full size and the server's limits on a response."""

    service: str  # the base URL the manifest names
    version: int  # 2 or 3
    width: int
    height: int
    max_width: int | None = None
    max_height: int | None = None
    max_area: int | None = None


def read_info(data: bytes, service: str, version: int | None) -> ImageInfo:
    """Parse ``info.json``; its own context decides the version where it says."""
    document: dict[str, Any] = load_json(data, f"{service}/info.json", INFO_MAX_BYTES)
    contexts = " ".join(c for c in as_list(document.get("@context")) if isinstance(c, str))
    if "image/3" in contexts:
        version = 3
    elif "image/2" in contexts:
        version = 2
    width, height = document.get("width"), document.get("height")
    if not (_positive(width) and _positive(height)):
        raise UnreadableInfo(f"{service}/info.json gives no width and height")
    # 3.0 puts the limits at the top; 2.x in the profile's description object (``profile: [uri, {...}]``)
    described = [p for p in as_list(document.get("profile")) if isinstance(p, dict)]
    limits = {name: next((d[name] for d in (document, *described) if name in d), None) for name in ("maxWidth", "maxHeight", "maxArea")}
    return ImageInfo(
        service,
        version or 2,
        width,
        height,
        limits["maxWidth"] if _positive(limits["maxWidth"]) else None,
        limits["maxHeight"] if _positive(limits["maxHeight"]) else None,
        limits["maxArea"] if _positive(limits["maxArea"]) else None,
    )


def _positive(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


def allowed_size(info: ImageInfo, width: int, height: int) -> tuple[int, int]:
    """The largest (width, height) of this aspect within the server's limits, never larger than asked."""
    scale = 1.0
    max_width = info.max_width
    max_height = info.max_height or (max_width if max_width else None)  # 3.0: maxHeight defaults to maxWidth
    if max_width and width * scale > max_width:
        scale = max_width / width
    if max_height and height * scale > max_height:
        scale = min(scale, max_height / height)
    if info.max_area and width * height * scale * scale > info.max_area:
        scale = min(scale, math.sqrt(info.max_area / (width * height)))
    if scale >= 1.0:
        return width, height
    return max(1, math.floor(width * scale)), max(1, math.floor(height * scale))


def image_url(info: ImageInfo, region: tuple[int, int, int, int] | None = None, image_format: str = "jpg") -> tuple[str, tuple[int, int]]:
    """The URL of ``region`` (x, y, w, h in full-size pixels; None: the whole image) at the largest size
    allowed, in ``image_format`` (jpg, which every server serves; png where lossless pixels matter), and that size."""
    width, height = (info.width, info.height) if region is None else region[2:]
    size = allowed_size(info, width, height)
    full = size == (width, height)
    region_text = "full" if region is None else ",".join(str(v) for v in region)
    if info.version >= 3:
        size_text = "max" if full else f"{size[0]},{size[1]}"
    else:
        size_text = "full" if full else f"{size[0]},"
    return f"{info.service}/{region_text}/{size_text}/0/default.{image_format}", size
