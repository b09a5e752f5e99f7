"""A page campaign's listing: each PAGE/ALTO file read as it is listed, one catalog line per TextLine, shards that follow pages.

The lister thread that lists a layout file reads and parses it (``pisar.layout``: no entities,
no DTDs, a size limit), so the catalog knows every line before a worker starts, and `status`,
`retry` and `export` count lines, not pages. A file that cannot be read as a layout (broken XML,
neither PAGE nor ALTO, gone between the listing and the read) becomes one line keyed
``<layout key>#`` whose worker records why, so a bad page is a recorded outcome, not a failed
listing; an outage still stops the listing, which resumes. A layout without any TextLine adds no
line and is counted among the skipped files.

A page's lines stay in one shard unless the page alone holds more than a shard: then it fills
whole shards and its rest starts the next one. So a worker reads each scan once per shard.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable

from pisar.errors import LineError
from pisar.layout import is_layout_key, line_key, read_layout
from pisar.storage import Storage, is_storable_key, skip_reason, skipped_label

NO_LINES = "(a layout without lines)"


def page_line_keys(storage: Storage, key: str) -> list[str]:
    """The catalog keys of the layout file ``key``'s TextLines, in reading order; ``[key#]`` when it cannot be read."""
    try:
        layout = read_layout(storage.read(key), key)
    except LineError:
        return [line_key(key, "")]
    return [line_key(key, line.line_id) for line in layout.lines]


def add_pages(
    storage: Storage, keys: Iterable[str], carry: list[str], shard_size: int, skipped: Counter[str]
) -> tuple[list[list[str]], list[str]]:
    """The listed ``keys``' layout files as lines added to ``carry``: the full shards made, and the new carry."""
    ready: list[list[str]] = []
    for key in keys:
        if not is_storable_key(key) or not is_layout_key(key):
            skipped[skip_reason(key) or skipped_label(key)] += 1  # a scan: read through its layout, counted as skipped
            continue
        lines = page_line_keys(storage, key)
        if not lines:
            skipped[NO_LINES] += 1
            continue
        if carry and len(carry) + len(lines) > shard_size:  # the page would straddle two shards: it starts the next
            ready.append(carry)
            carry = []
        carry = carry + lines
        while len(carry) >= shard_size:  # full, or a page larger than a shard
            ready.append(carry[:shard_size])
            carry = carry[shard_size:]
    return ready, carry
