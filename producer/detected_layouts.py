"""A detect campaign's layouts, read like layout files: what `export --format page|alto` writes back.

A detected scan's layout lives in the catalog (``page.layout``, PAGE XML), not beside the scan, so
the write-back reads it from there; the file it writes is named after the scan (``f/0001.jpg`` ->
``f/0001.xml``; the second page of ``f/vol.tif``: ``f/vol_p2.xml``), beside where the scan lies, as
Transkribus and eScriptorium exports are.
"""

from __future__ import annotations

from pathlib import PurePosixPath

from pisar.catalog import pages
from pisar.errors import UnreadableLayout
from pisar.sources.detected_pages import scan_frame


class DetectedLayouts:
    """``read(scan key)``: the PAGE XML detected for that scan."""

    def __init__(self, url: str, campaign_id: int) -> None:
        self.url, self.campaign_id = url, campaign_id

    def read(self, key: str) -> bytes:
        found = pages.stored_layouts(self.url, self.campaign_id, [key])
        if key not in found:
            raise UnreadableLayout(f"{key}: no layout was detected for this scan (see `pisar status`)")
        return found[key]

    @staticmethod
    def file_name(scan_key: str) -> str:
        """The layout file's key for a scan: the scan's, with ``.xml`` for its suffix (``_p2.xml`` for
        the second page of a multi-page file)."""
        file_key, frame = scan_frame(scan_key)
        path = PurePosixPath(file_key)
        return str(path.with_name(f"{path.stem}_p{frame + 1}.xml" if frame else f"{path.stem}.xml"))
