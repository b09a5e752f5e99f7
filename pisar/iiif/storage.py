"""A IIIF campaign's storage: manifests resolved into canvases at listing, pages read through the Image API.

The source is a manifest or a collection (a URL, or a local JSON file), or a text file listing
their URLs, one a line. Listing walks it (collections to ``PISAR_IIIF_MAX_COLLECTION_DEPTH``, at
most ``PISAR_IIIF_MAX_MANIFESTS`` manifests), records each manifest and its canvases in the
catalog (``pisar/catalog/canvases.py``), a manifest that cannot be read as its recorded error,
then lists each canvas as two objects, as a folder of scans and PAGE files would hold them:

- ``<manifest>/p0001.jpg``: the canvas's image, through its Image API service (``info.json`` read
  once per image and process, the whole image at the largest size the server allows) or, without a
  service, its own URL;
- ``<manifest>/p0001.xml``: the PAGE or ALTO file the canvas links, where it links one.

So every line source reads IIIF unchanged: a layout campaign lists the ``.xml`` objects and cuts
its lines from the ``.jpg`` of the same canvas (``scan_for``), a detect campaign lists the ``.jpg``
ones. ``<manifest>`` is the manifest URL's host and path (its file name for a local file), made
unique within the campaign; the canvas is its 1-based place in the manifest.

Workers read a shard's canvases from the catalog, never the manifests; every request goes through
``client.IiifClient`` (the address policy, per-host limits, retries, size caps).
"""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Iterator
from pathlib import Path, PurePosixPath
from typing import Literal
from urllib.parse import urlsplit

from pisar.catalog import canvases
from pisar.catalog.canvases import CanvasRow
from pisar.errors import ConfigError, LineError, MissingObject, NotFound, ServiceUnavailable, TransientError
from pisar.iiif.addresses import AddressPolicy, parse_networks
from pisar.iiif.client import ClientLimits, IiifClient
from pisar.iiif.image_api import INFO_MAX_BYTES, ImageInfo, image_url, read_info
from pisar.iiif.matching import match_layouts
from pisar.iiif.presentation import Collection, Manifest, UnreadableManifest, read_document
from pisar.layout import MAX_LAYOUT_BYTES, is_layout_key, read_layout
from pisar.settings import Settings
from pisar.storage import NOTHING_SKIPPED, KeyRange, Storage, open_storage

log = logging.getLogger(__name__)

PREFIX = "iiif:"
IMAGE_SUFFIX = ".jpg"
LAYOUT_SUFFIX = ".xml"
_KEY = re.compile(r"^(?P<page>.+/p\d+)(?P<suffix>\.jpg|\.xml)$")
_SLUG_UNSAFE = re.compile(r"[^A-Za-z0-9._~-]+")


def is_iiif_source(source: str) -> bool:
    """A manifest URL, ``iiif:<path or URL>``, or a local file (a manifest, a collection, a list of URLs)."""
    if source.startswith((PREFIX, "http://", "https://")):
        return True
    return "://" not in source and Path(source).is_file()


def client_from_settings(settings: Settings) -> IiifClient:
    limits = ClientLimits(
        host_connections=settings.iiif_host_connections,
        connect_timeout=settings.iiif_connect_timeout_seconds,
        read_timeout=settings.iiif_read_timeout_seconds,
        attempts=settings.iiif_attempts,
        retry_after_max=settings.iiif_retry_after_max_seconds,
    )
    return IiifClient(AddressPolicy(parse_networks(n for n in settings.iiif_allow_networks.split(",") if n.strip())), limits)


def page_of(key: str) -> tuple[str, str]:
    """(page key, ``.jpg`` or ``.xml``) of a listed IIIF object key; ``MissingObject`` for another key."""
    match = _KEY.match(key)
    if match is None:
        raise MissingObject(f"{key!r} is not a canvas's image or layout")
    return match["page"], match["suffix"]


class IiifStorage:
    """The ``Storage`` of a IIIF campaign (the module docstring)."""

    prefix = ""
    skipped_up_front = NOTHING_SKIPPED

    def __init__(self, source: str, settings: Settings, campaign_id: int | None = None) -> None:
        self.settings, self.campaign_id = settings, campaign_id
        self.location = source.removeprefix(PREFIX)  # read by the producer only: a worker elsewhere reads the catalog's canvases
        self.url = self.location if self.location.startswith(("http://", "https://")) else PREFIX + str(Path(self.location).resolve())
        self.client = client_from_settings(settings)
        self._canvases: dict[str, CanvasRow] = {}
        self._infos: dict[str, ImageInfo] = {}
        self._layout_storage: Storage | Literal[False] | None = None
        self._lock = threading.Lock()

    # Listing ------------------------------------------------------------------------------------

    def key_ranges(self, wanted: int) -> list[KeyRange]:
        """One range: the manifests are walked in order, once; their canvases come from the catalog.

        Called when a campaign is made, so a file that is missing or lists no URL is refused then."""
        _inputs(self.location)
        return [KeyRange("")]

    def list_range(self, part: KeyRange, after: str | None) -> Iterator[list[str]]:
        """Resolve the manifests not yet recorded, then every canvas's objects after ``after``, in key order."""
        campaign_id = self._campaign()
        resolve(self.settings.catalog_url, campaign_id, _inputs(self.location), self.client, self.settings)
        if self._layouts() is not None:
            self._match_layouts(campaign_id)
        # Resumed after a canvas's object: from that canvas on, less its objects listed already (a
        # canvas's objects follow each other; canvases go in key order, whatever their objects' order)
        last_page = page_of(after)[0] if after else None
        for rows in canvases.canvas_pages(self.settings.catalog_url, campaign_id, last_page):
            page = [key for row in rows for key in _objects(row) if row.key != last_page or key > (after or "")]
            if page:
                yield page

    def iter_keys(self) -> Iterator[str]:
        for page in self.list_range(KeyRange(""), None):
            yield from page

    # Reading ------------------------------------------------------------------------------------

    def read(self, key: str) -> bytes:
        """A canvas's layout file or its image, as bytes; a page's problem is its ``LineError``."""
        page, suffix = page_of(key)
        canvas = self.canvas(page)
        if suffix == LAYOUT_SUFFIX:
            if canvas.layout_key:  # a file of the campaign's --layouts folder, matched to this canvas
                layouts = self._layouts()
                if layouts is None:
                    raise MissingObject(f"{canvas.canvas_id}: the campaign names no layouts folder for {canvas.layout_key}")
                return layouts.read(canvas.layout_key)
            if canvas.layout is None:
                raise MissingObject(f"{canvas.canvas_id} links no PAGE or ALTO file")
            return self.client.get(canvas.layout, MAX_LAYOUT_BYTES, "layout", "application/xml, text/xml, */*")
        return self.image(canvas)

    def image(self, canvas: CanvasRow) -> bytes:
        """The canvas's whole image at the largest size its server allows."""
        if canvas.service is None:
            if canvas.image is None:
                raise MissingObject(f"{canvas.canvas_id} paints no image")
            return self.client.get(canvas.image, self.settings.iiif_max_image_bytes, "image", "image/*")
        url, _ = image_url(self.info(canvas), image_format=self.settings.iiif_image_format)
        return self.client.get(url, self.settings.iiif_max_image_bytes, "image", "image/*")

    def info(self, canvas: CanvasRow) -> ImageInfo:
        """The image's ``info.json``, read once per service in this process."""
        service = canvas.service or ""
        with self._lock:
            known = self._infos.get(service)
        if known is not None:
            return known
        data = self.client.get(f"{service}/info.json", INFO_MAX_BYTES, "info", "application/ld+json, application/json")
        info = read_info(data, service, canvas.service_version)
        with self._lock:
            if len(self._infos) > 4096:
                self._infos.clear()
            self._infos[service] = info
        return info

    def canvas(self, page: str) -> CanvasRow:
        with self._lock:
            found = self._canvases.get(page)
        if found is None:
            rows = canvases.canvases(self.settings.catalog_url, self._campaign(), [page])
            if page not in rows:
                raise MissingObject(f"{page} is not a canvas of this campaign")
            found = rows[page]
            with self._lock:
                if len(self._canvases) > 65536:
                    self._canvases.clear()
                self._canvases[page] = found
        return found

    def _layouts(self) -> Storage | None:
        """The campaign's folder of layout files matched to canvases (``--layouts``), opened once."""
        if self._layout_storage is None:
            found = canvases.layouts_url(self.settings.catalog_url, self._campaign())
            self._layout_storage = open_storage(found, self.settings) if found else False
        return self._layout_storage or None

    def _match_layouts(self, campaign_id: int) -> None:
        """Match the layout files to the canvases that have no layout yet (a resumed listing: those left)."""
        layouts = self._layouts()
        assert layouts is not None
        named: dict[str, str] = {}
        for key in layouts.iter_keys():
            if is_layout_key(key):
                try:
                    named[key] = read_layout(layouts.read(key), key).image
                except LineError:
                    named[key] = ""  # matched by its own file name, then recorded as unreadable when read
        rows = [row for page in canvases.canvas_pages(self.settings.catalog_url, campaign_id, None) for row in page]
        matched = match_layouts((row for row in rows if row.layout_key is None), named)
        canvases.set_layout_keys(self.settings.catalog_url, campaign_id, matched.layouts)
        if matched.unmatched or matched.ambiguous:
            log.warning(
                "%s layout files match no canvas (e.g. %s), %s more than one or a canvas another file names (e.g. %s)",
                *(len(matched.unmatched), matched.unmatched[:1], len(matched.ambiguous), matched.ambiguous[:1]),
            )

    def scan_for(self, layout_key: str, named: str) -> str:
        """The scan of a canvas's layout: the canvas's own image, whatever file name the XML gives."""
        return page_of(layout_key)[0] + IMAGE_SUFFIX

    def _campaign(self) -> int:
        """The campaign whose canvases this storage reads; a IIIF source opened outside one (``pisar train``,
        ``eval --gt``) is refused in one line: its pages are known only once a campaign has listed them."""
        if self.campaign_id is None:
            raise ConfigError(f"{self.url} is a IIIF source: read it with `pisar run` or `pisar submit`, not here")
        return self.campaign_id


def _objects(row: CanvasRow) -> list[str]:
    image = [row.key + IMAGE_SUFFIX] if row.service or row.image else []
    return image + ([row.key + LAYOUT_SUFFIX] if row.layout or row.layout_key else [])


def _inputs(location: str) -> list[str]:
    """The manifest and collection URLs (or the one local file) a source names."""
    if location.startswith(("http://", "https://")):
        return [location]
    path = Path(location)
    if not path.is_file():
        raise NotFound(f"IIIF source {location} is neither a URL nor a file")
    head = path.open("rb").read(4096).lstrip()
    if head.startswith(b"{"):
        return [str(path.resolve())]  # a manifest or collection file
    urls = []
    for number, line in enumerate(path.read_text(encoding="utf-8", errors="replace").splitlines(), start=1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if not line.startswith(("http://", "https://")):
            raise ConfigError(f"{location} line {number}: {line[:80]!r} is not a manifest URL (http:// or https://)")
        urls.append(line)
    if not urls:
        raise NotFound(f"{location} lists no manifest URL")
    return urls


def resolve(url: str, campaign_id: int, inputs: list[str], client: IiifClient, settings: Settings) -> None:
    """Walk the source's manifests and collections, recording each manifest not yet recorded with its canvases.

    A document that cannot be read is recorded as that manifest's error and the walk goes on. One
    whose server does not answer (``TransientError``: refused, unresolvable, 429 or 5xx past the
    retries) is recorded as ``UNANSWERED``, and so is every later one on the same host without a
    request (one dead host costs one manifest's retries, not a thousand); the walk goes on with the
    other hosts, and ``pisar resume`` asks them again. Only where no manifest has been read at all
    is it an outage that stops the listing (a source that is one manifest, on a server that is down).
    """
    done = canvases.recorded_urls(url, campaign_id)
    slugs = canvases.used_slugs(url, campaign_id)
    todo: list[tuple[str, int]] = [(i, 0) for i in reversed(inputs)]
    seen: set[str] = set()
    ordinal = canvases.last_ordinal(url, campaign_id)
    down: dict[str, tuple[str, str]] = {}  # host -> (the URL it did not answer, why), in this walk
    owed = [u for u, _ in canvases.unanswered(url, campaign_id)]  # asked again even where the walk no longer reaches them
    while todo or owed:
        if not todo:  # the walk is over: what did not answer before and this walk did not reach (its collection did not answer)
            todo, owed = [(u, 1) for u in reversed(owed) if u not in seen], []
            continue
        location, depth = todo.pop()
        if location in seen:
            continue
        seen.add(location)
        if len(seen) > settings.iiif_max_manifests:
            raise ConfigError(
                f"the source names more than {settings.iiif_max_manifests:,} manifests and collections (PISAR_IIIF_MAX_MANIFESTS)"
            )
        if location in done:
            continue
        host = urlsplit(location).hostname or ""
        if host in down:
            ordinal += 1
            why = f"{host} did not answer earlier in this listing ({down[host][1]})"
            canvases.record_manifest(url, campaign_id, ordinal, location, error_class=canvases.UNANSWERED, error=why)
            continue
        try:
            local = depth == 0 and location in inputs  # only the source's own file is read from disk; what it names is fetched
            document = read_document(_fetch(location, client, settings, local), location, settings.iiif_max_manifest_bytes)
            if isinstance(document, Collection):
                canvases.drop_unanswered(url, campaign_id, location)  # a collection that did not answer before: its members are walked now
                if depth >= settings.iiif_max_collection_depth:
                    raise UnreadableManifest(f"{location}: collections nested deeper than {settings.iiif_max_collection_depth}")
                for manifest in document.embedded:
                    if manifest.url not in done:
                        ordinal += 1
                        _record(url, campaign_id, ordinal, manifest, slugs)
                        done.add(manifest.url)
                todo.extend((m, depth + 1) for m in reversed(document.members))
                continue
            ordinal += 1
            _record(url, campaign_id, ordinal, document, slugs)
            done.add(location)
        except LineError as exc:
            ordinal += 1
            canvases.record_manifest(url, campaign_id, ordinal, location, error_class=exc.error_class, error=str(exc))
            done.add(location)
        except TransientError as exc:
            down[host] = (location, str(exc))
            ordinal += 1
            canvases.record_manifest(url, campaign_id, ordinal, location, error_class=canvases.UNANSWERED, error=str(exc))
    if down and not canvases.manifest_counts(url, campaign_id)[0]:  # none read, nothing to list: the listing stops, resumable, in one line
        location, why = next(iter(down.values()))
        raise ServiceUnavailable(f"listing {location}: {why}; run the same command again, or `pisar resume`, once it answers")


def _fetch(location: str, client: IiifClient, settings: Settings, local: bool) -> bytes:
    """A manifest's or collection's bytes: over http(s), or from disk for the source's own file only
    (a collection naming ``file:///etc/passwd`` or a path gets that member's error, not the file)."""
    if location.startswith(("http://", "https://")):
        return client.get(location, settings.iiif_max_manifest_bytes, "manifest", "application/ld+json, application/json")
    if not local:
        raise UnreadableManifest(f"{location!r}: a collection's member must be an http(s) URL")
    try:
        size = Path(location).stat().st_size
        if size > settings.iiif_max_manifest_bytes:
            raise UnreadableManifest(f"{location}: {size:,} bytes, more than a manifest's {settings.iiif_max_manifest_bytes:,}")
        return Path(location).read_bytes()
    except OSError as exc:
        raise UnreadableManifest(f"{location}: {exc.strerror or exc}") from None


def _record(url: str, campaign_id: int, ordinal: int, manifest: Manifest, slugs: set[str]) -> None:
    slug = _unique(slug_of(manifest.url), slugs)
    manifest_id = canvases.record_manifest(
        url, campaign_id, ordinal, manifest.url, slug=slug, version=manifest.version, label=manifest.label, body=manifest.body
    )
    width = max(4, len(str(len(manifest.canvases))))
    rows = [
        {
            "key": f"{slug}/p{canvas.ordinal:0{width}d}",
            "ordinal": canvas.ordinal,
            "canvas_id": canvas.canvas_id,
            "label": canvas.label,
            "width": canvas.width,
            "height": canvas.height,
            "service": canvas.service,
            "service_version": canvas.service_version,
            "image": canvas.image,
            "layout": canvas.layout,
        }
        for canvas in manifest.canvases
    ]
    canvases.record_canvases(url, campaign_id, manifest_id, rows)


def slug_of(location: str) -> str:
    """A manifest's part of its canvases' keys: the URL's host and path, or a local file's name."""
    if not location.startswith(("http://", "https://")):
        return _safe(PurePosixPath(location).stem) or "manifest"
    parts = urlsplit(location)
    path = re.sub(r"/(manifest|collection)(\.json)?$", "", parts.path.rstrip("/"), flags=re.IGNORECASE).removesuffix(".json")
    pieces = [_safe(parts.netloc.replace(":", "_"))] + [_safe(p) for p in path.split("/") if p]
    if parts.query:
        pieces.append("q_" + _safe(parts.query))
    return "/".join(p for p in pieces if p) or "manifest"


def _safe(text: str) -> str:
    return _SLUG_UNSAFE.sub("_", text).strip("._")[:120]


def _unique(slug: str, used: set[str]) -> str:
    candidate, n = slug, 1
    while candidate in used:
        n += 1
        candidate = f"{slug}~{n}"
    used.add(candidate)
    return candidate
