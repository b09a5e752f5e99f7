"""Creating a campaign: record it with its key ranges, then list the source into the catalog.

The campaign and its ranges are one transaction; the listing then streams shards and their
pending lines in, page by page (``producer/listing.py``), while the feeder publishes them. A
crash leaves the listing resumable (`pisar resume`), with every written shard ready to run.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import delete, insert
from sqlalchemy.exc import IntegrityError

from pisar import __version__, model_ref
from pisar.catalog import canvases
from pisar.catalog.db import get_engine
from pisar.catalog.models import Campaign, ListingPart, SourceKind
from pisar.constants import DEFAULT_PRIORITY
from pisar.errors import ConfigError, NotFound, PisarError
from pisar.iiif.storage import is_iiif_source
from pisar.names import check_name
from pisar.page_crop import CROPS
from pisar.processor import check_model_files, describe_generation, describe_preprocessing
from pisar.producer.campaigns import find_campaign
from pisar.producer.listing import Listed, list_into_catalog, plan_ranges, reopen
from pisar.producer.manifest import ManifestKeys, read_manifest
from pisar.reader.confidence import FORMULA as CONFIDENCE_FORMULA
from pisar.reader.options import GenerationOptions
from pisar.settings import Settings
from pisar.sources import line_source
from pisar.storage import KeySource, Storage, open_storage

log = logging.getLogger(__name__)


class CampaignExists(PisarError):
    """A campaign with this name is already in the catalog."""


@dataclass(frozen=True)
class SubmitRequest:
    """Everything that defines a campaign; recorded with it."""

    source_url: str
    model: str
    name: str
    shard_size: int
    queue: str
    manifest: str | None = None  # keys from this file or s3:// S3 Inventory instead of a listing (``producer/manifest.py``)
    priority: int = DEFAULT_PRIORITY  # 0 (lowest) to 9 (most urgent): what the feeder publishes first
    layout: str = "lines"  # lines: each image is a line; xml: PAGE/ALTO files, one line per TextLine (pisar/sources/page_lines.py)
    crop: str | None = None  # how a page line is cut from its scan: polygon (outside it white) or box; None: the source's default
    layouts: str | None = None  # IIIF: a folder or S3 prefix of layout files matched to the canvases (``pisar/iiif/matching.py``)


def create_campaign(
    settings: Settings, request: SubmitRequest, tick: Callable[[], None] | None = None, *, wait_turn: bool = False
) -> tuple[Campaign, Listed]:
    """Resolve the model, record the campaign and list its source into the catalog; refuses an existing name.

    ``tick`` runs every few seconds while the listing goes on (the submit publishes with it).
    ``wait_turn``: should another process take up the new campaign's listing first (a second
    `pisar run` of the same name), wait for it instead of failing.
    """
    url = settings.catalog_url
    check_name(request.name)
    if find_campaign(url, request.name) is not None:
        raise CampaignExists(f"campaign {request.name!r} already exists: use `pisar resume {request.name}` or another --name")
    source_kind = line_source(request.layout)  # a layout Pisar does not read is refused before anything is made
    if source_kind.detects:  # one line naming what to install, before anything is made
        from pisar.detect import check_available

        check_available(settings.detector)
    crop = request.crop or source_kind.default_crop
    if crop not in CROPS:
        raise ConfigError(f"--crop must be one of {', '.join(CROPS)}, not {crop!r}")
    storage = open_storage(request.source_url, settings)  # cheap checks first: a bad URL fails at once
    layouts_url = _layouts_url(settings, request)
    ref = model_ref.resolve(model_ref.parse(request.model))
    check_model_files(ref)  # from its files: the producer never imports torch
    manifest = _absolute(str(request.manifest)) if request.manifest else None
    source = _key_source(storage, manifest, request.layout)
    ranges = source.key_ranges(settings.list_threads * 4)
    campaign = Campaign(
        name=request.name,
        source_url=storage.url,
        model_id=ref.source,
        model_revision=ref.revision or "",
        dtype=settings.dtype,
        generation=describe_generation(ref, GenerationOptions.greedy(settings.max_new_tokens, settings.num_beams).overrides()),
        preprocessing=describe_preprocessing(ref),
        confidence_formula=CONFIDENCE_FORMULA,
        versions={"pisar": __version__, "transformers": _installed("transformers"), "torch": _installed("torch")},
        queue=request.queue,
        priority=request.priority,
        shard_size=settings.detect_pages_per_shard if source_kind.detects else request.shard_size,  # scans to a shard
        manifest=manifest,
        layout=SourceKind(request.layout),
        crop=crop,
        layouts_url=layouts_url,
    )
    with get_engine(url).begin() as conn:
        try:
            row = conn.execute(insert(Campaign.__table__).values(campaign.model_dump(exclude={"id"})).returning(Campaign.__table__.c.id))
        except IntegrityError:  # a concurrent submit of the same name won the race
            raise CampaignExists(f"campaign {request.name!r} already exists: use `pisar resume {request.name}`") from None
        campaign.id = row.scalar_one()
        plan_ranges(conn, campaign.id, ranges, dict(source.skipped_up_front))
    if is_iiif_source(request.source_url):  # its listing records the manifests' canvases, the campaign's own
        source = _key_source(open_storage(request.source_url, settings, campaign.id), manifest, request.layout)
    log.info("campaign %s: listing %s in %s key ranges", campaign.name, storage.url, len(ranges))
    listed = _list(settings, campaign, source, tick, wait_turn)
    if not listed.keys and not listed.scans:
        unread = [f"{u}: {c}: {e}" for u, c, e in canvases.unread_manifests(url, campaign.id, limit=3)]
        _forget(url, campaign.id)
        why = f"; manifests not read: {'; '.join(unread)}" if unread else ""
        raise NotFound(f"no {line_source(request.layout).describes} under {storage.url} (skipped files: {listed.describe_skipped()}){why}")
    campaign.line_count, campaign.shard_count, campaign.skipped_files = listed.keys, listed.shards, dict(listed.skipped)
    log.info("campaign %s: %s lines in %s shards from %s", campaign.name, campaign.line_count, campaign.shard_count, storage.url)
    return campaign, listed


@dataclass(frozen=True)
class Submitted:
    """A new campaign, its listing, and what the submit published while it listed."""

    campaign: Campaign
    listing: Listed
    published: str  # ``describe_published``

    def describe(self) -> str:
        campaign = self.campaign
        listed = f"{self.listing.scans} scans" if self.listing.scans else f"{campaign.line_count} lines"
        return (
            f"campaign {campaign.name}: {listed} in {campaign.shard_count} shards, {self.published} "
            f"(skipped files: {self.listing.describe_skipped()}){self.listing.still_owed()}"
        )


def submit_and_publish(settings: Settings, request: SubmitRequest) -> Submitted:
    """`pisar submit`: create the campaign, publishing the shards listed so far every few seconds, and once more at the end."""
    from pisar.producer.feeder import describe_published, top_up, top_up_detect

    fed = []
    detects = line_source(request.layout).detects
    publish = top_up_detect if detects else top_up  # a detect campaign's scans first; its read shards follow as they are detected
    campaign, listing = create_campaign(settings, request, tick=lambda: fed.append(publish(settings, request.queue)))
    fed.append(publish(settings, campaign.queue))
    if detects:
        sent = sum(f.by_campaign.get(campaign.name, 0) for f in fed)
        rest = "" if sent >= listing.scans else "; `pisar feed` sends the rest as detection drains"
        published = f"{sent} of {listing.scans} scans sent to detection on '{fed[-1].queue}'{rest}"
        return Submitted(campaign, listing, published + "; `pisar feed` publishes their read shards as they are detected")
    return Submitted(campaign, listing, describe_published(fed, campaign))


def continue_listing(settings: Settings, campaign: Campaign, tick: Callable[[], None] | None = None, *, wait_turn: bool = False) -> Listed:
    """Go on with a listing that was interrupted, from where each key range stopped (``wait_turn``: see ``create_campaign``)."""
    storage = open_storage(campaign.source_url, settings, campaign.id)
    source = _key_source(storage, campaign.manifest, campaign.layout)
    return _list(settings, campaign, source, tick, wait_turn)


def _list(settings: Settings, campaign: Campaign, source: KeySource, tick: Callable[[], None] | None, wait_turn: bool) -> Listed:
    """``list_into_catalog`` with the settings' threads and pace, and what the source still owes, in words."""
    listed = list_into_catalog(
        settings.catalog_url, campaign.id, source, settings.list_threads, settings.feed_interval_seconds, tick, wait_turn=wait_turn
    )
    listed.unanswered = _unanswered(settings, campaign)
    return listed


def relist_unanswered(settings: Settings, campaign: Campaign) -> bool:
    """Open a IIIF campaign's finished listing again where manifests did not answer it, so that
    ``continue_listing`` asks them again and lists their canvases after the rest; whether it did."""
    if campaign.listed_at is None or not is_iiif_source(campaign.source_url):
        return False
    if not canvases.unanswered(settings.catalog_url, campaign.id):
        return False
    reopen(settings.catalog_url, campaign.id)
    campaign.listed_at = None
    return True


def _unanswered(settings: Settings, campaign: Campaign) -> str:
    """The IIIF manifests that did not answer this listing, in words ("" for none, or another source)."""
    if not is_iiif_source(campaign.source_url):
        return ""
    owed = canvases.unanswered(settings.catalog_url, campaign.id)
    if not owed:
        return ""
    (first, why), count = owed[0], len(owed)
    return (
        f"{count} manifest{'s' if count != 1 else ''} did not answer, their pages not listed yet (first: {first}: {why}); "
        f"`pisar resume {campaign.name}` asks them again"
    )


def _key_source(storage: Storage, manifest: str | None, layout: str) -> KeySource:
    """Where a campaign's keys come from: the storage's listing, or the manifest (the source's
    input keys in it: line images, or a page campaign's PAGE/ALTO files, read through ``storage``)."""
    if manifest is None:
        return storage
    return ManifestKeys(read_manifest(manifest, storage.prefix, storage, line_source(layout).is_input_key), storage)


def _layouts_url(settings: Settings, request: SubmitRequest) -> str | None:
    """``--layouts``, checked: only for a IIIF source read by its layouts, and a folder or prefix that exists."""
    if request.layouts is None:
        return None
    if not is_iiif_source(request.source_url) or request.layout != SourceKind.PAGE_LINES:
        raise ConfigError("--layouts matches layout files to IIIF canvases: it needs a IIIF source and --layout xml")
    return open_storage(request.layouts, settings).url


def _absolute(manifest: str) -> str:
    """A local manifest as an absolute path (a resume may run elsewhere); an s3:// one as given."""
    return manifest if manifest.startswith("s3://") else str(Path(manifest).resolve())


def _installed(package: str) -> str:
    """A package's installed version, read from its metadata (importing torch costs 350 MB)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(package)
    except PackageNotFoundError:
        return "(not installed)"


def _forget(url: str, campaign_id: int) -> None:
    """Remove a campaign that turned out to hold no line images (it has no shards)."""
    with get_engine(url).begin() as conn:
        canvases.forget(conn, campaign_id)
        conn.execute(delete(ListingPart.__table__).where(ListingPart.__table__.c.campaign_id == campaign_id))
        conn.execute(delete(Campaign.__table__).where(Campaign.__table__.c.id == campaign_id))
