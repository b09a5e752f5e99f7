"""Catalog tables: the durable truth of every campaign, shard and line.

Times are timezone-aware UTC (``utcnow()``); Postgres stores timestamptz.
"""

from __future__ import annotations

from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import JSON, BigInteger, Column, ForeignKey, Index, Integer, String, Text, TypeDecorator, UniqueConstraint, false, text
from sqlmodel import Field, SQLModel

from pisar.constants import DEFAULT_PRIORITY


def utcnow() -> datetime:
    """Aware UTC now; every timestamp in the catalog uses it."""
    return datetime.now(UTC)


class ShardState(StrEnum):
    """Shard lifecycle: pending -> queued -> running -> done, or failed (retried) -> quarantined.

    The moves between them are ``pisar.catalog.shards.MOVES``, the only writer of ``shard.state``.
    """

    PENDING = "pending"
    QUEUED = "queued"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"
    QUARANTINED = "quarantined"
    DETECTING = "detecting"  # a detect campaign's read shard, waiting for its scans' lines (``page``)


class SourceKind(StrEnum):
    """What a campaign reads (``campaign.layout``, ``--layout``): ``pisar.sources.line_source`` picks its source."""

    LINE_IMAGES = "lines"  # every image is a line
    PAGE_LINES = "xml"  # PAGE/ALTO files whose TextLines are cut from their scans
    DETECTED_PAGES = "detect"  # page scans with no layout: their lines detected first (``page`` rows)


class SourceKindType(TypeDecorator):
    """``campaign.layout`` as the enum in Python, the same short text in the database as always."""

    impl = String(20)
    cache_ok = True

    def process_bind_param(self, value: Any, dialect: Any) -> str | None:
        return None if value is None else SourceKind(value).value

    def process_result_value(self, value: Any, dialect: Any) -> SourceKind | None:
        return None if value is None else SourceKind(value)


class LineStatus(StrEnum):
    """A line is pending until its shard commits, then ok or error."""

    PENDING = "pending"
    OK = "ok"
    ERROR = "error"


class Campaign(SQLModel, table=True):
    """One transcription job: a source, a model and how it was run (provenance)."""

    id: int | None = Field(default=None, primary_key=True)
    name: str = Field(max_length=200, unique=True)
    source_url: str = Field(sa_column=Column(Text, nullable=False))
    model_id: str = Field(sa_column=Column(Text, nullable=False))
    model_revision: str = Field(max_length=200)
    dtype: str = Field(max_length=20)
    generation: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    preprocessing: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    confidence_formula: str = Field(max_length=100)
    versions: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    queue: str = Field(max_length=200)
    # 0 (lowest) to 9 (most urgent): the feeder publishes the most urgent pending shards first.
    priority: int = Field(default=DEFAULT_PRIORITY, sa_column_kwargs={"server_default": str(DEFAULT_PRIORITY)})
    shard_size: int
    line_count: int = 0
    shard_count: int = 0
    skipped_files: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    created_at: datetime = Field(default_factory=utcnow)
    updated_at: datetime = Field(default_factory=utcnow)
    listed_at: datetime | None = None  # every key range listed; until then shards keep arriving
    manifest: str | None = Field(default=None, sa_column=Column(Text))  # keys from this file instead of a listing
    layout: SourceKind = Field(default=SourceKind.LINE_IMAGES, sa_type=SourceKindType, sa_column_kwargs={"server_default": "lines"})
    crop: str = Field(default="polygon", max_length=20, sa_column_kwargs={"server_default": "polygon"})  # page lines: polygon or box
    layouts_url: str | None = Field(default=None, sa_column=Column(Text))  # IIIF: a folder of layout files matched to canvases


class ListingPart(SQLModel, table=True):
    """A key range of a campaign's source, listed by one thread and resumable on its own."""

    __tablename__ = "listing_part"
    __table_args__ = (UniqueConstraint("campaign_id", "ordinal", name="uq_listing_part_campaign_ordinal"),)

    id: int | None = Field(default=None, primary_key=True)
    campaign_id: int = Field(foreign_key="campaign.id")
    ordinal: int
    prefix: str = Field(sa_column=Column(Text, nullable=False))
    recursive: bool
    folders: list[str] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))  # a run of sub-folders, listed in turn
    after: str | None = Field(default=None, sa_column=Column(Text))  # the last key whose fate is committed
    carry: list[str] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))  # listed, not yet a full shard
    keys: int = Field(default=0, sa_column=Column(BigInteger, nullable=False, server_default="0"))  # image keys put in shards
    skipped: dict[str, int] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    done: bool = False


class Shard(SQLModel, table=True):
    """A unit of work: its membership is the lines that point at it."""

    __table_args__ = (
        UniqueConstraint("campaign_id", "index", name="uq_shard_campaign_index"),
        Index("ix_shard_campaign_state", "campaign_id", "state"),
        Index("ix_shard_campaign_finished", "campaign_id", "finished_at"),
        Index(
            "ix_shard_pending",
            "campaign_id",
            "index",
            postgresql_where=text("state = 'pending'"),
            sqlite_where=text("state = 'pending'"),
        ),
    )

    id: int | None = Field(default=None, primary_key=True)
    campaign_id: int = Field(foreign_key="campaign.id")
    index: int
    state: str = Field(default=ShardState.PENDING, max_length=20)
    line_count: int
    attempts: int = 0
    token: int = 0
    lease_until: datetime | None = None
    worker: str | None = Field(default=None, max_length=300)
    engine: str | None = Field(default=None, max_length=100)
    error: str | None = Field(default=None, sa_column=Column(Text))
    probe_key: str | None = Field(default=None, sa_column=Column(Text))  # set only while a suspect shard runs line by line
    suspect: bool = Field(default=False, sa_column_kwargs={"server_default": false()})  # its last worker died: read line by line
    duplicate_deliveries: int = 0
    queued_at: datetime | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    load_seconds: float | None = None
    generate_seconds: float | None = None
    model_id: str | None = Field(default=None, sa_column=Column(Text))  # set by `retry --model`: overrides the campaign's
    model_revision: str | None = Field(default=None, max_length=200)
    # The shard's lines by result, rewritten with them (``pisar.catalog.shards.count_lines``):
    # `status` sums these instead of counting 100 M line rows.
    ok_lines: int = Field(default=0, sa_column_kwargs={"server_default": "0"})
    error_lines: int = Field(default=0, sa_column_kwargs={"server_default": "0"})
    empty_lines: int = Field(default=0, sa_column_kwargs={"server_default": "0"})  # ok lines flagged ``empty``
    # Lines its last run wrote: the recent throughput counts a retry's re-read lines, not the whole shard.
    run_lines: int = Field(default=0, sa_column_kwargs={"server_default": "0"})


class Page(SQLModel, table=True):
    """A detect campaign's scan: detected once, as its own fenced unit of work (``pisar/catalog/pages.py``).

    Its lines join ``shard_id``, the read shard made for it and its neighbours at listing, which
    leaves ``detecting`` once every one of its scans is settled. ``layout`` is what the detector
    found, as PAGE XML (``pisar/detect/page_xml.py``), read back like an archive's own PAGE file.
    """

    __table_args__ = (
        UniqueConstraint("campaign_id", "key", name="uq_page_campaign_key"),
        Index("ix_page_campaign_state", "campaign_id", "state"),
        Index("ix_page_shard", "shard_id"),
    )

    id: int | None = Field(default=None, primary_key=True)
    campaign_id: int = Field(foreign_key="campaign.id")
    shard_id: int = Field(foreign_key="shard.id")
    key: str = Field(sa_column=Column(Text().with_variant(Text(collation="C"), "postgresql"), nullable=False))  # the scan's key
    state: str = Field(default=ShardState.PENDING, max_length=20)
    attempts: int = 0
    token: int = 0
    lease_until: datetime | None = None
    worker: str | None = Field(default=None, max_length=300)
    error: str | None = Field(default=None, sa_column=Column(Text))
    error_class: str | None = Field(default=None, max_length=100)
    flags: str | None = Field(default=None, sa_column=Column(Text))  # ``no_lines``: detected, nothing found
    line_count: int | None = None
    width: int | None = None
    height: int | None = None
    detector: str | None = Field(default=None, sa_column=Column(Text))  # what found its lines (``Detector.describe``)
    layout: str | None = Field(default=None, sa_column=Column(Text))  # PAGE XML
    queued_at: datetime | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    detect_seconds: float | None = None
    detector_name: str | None = Field(default=None, sa_column=Column(Text))  # `retry --detector`: this scan's detector
    retry_id: int | None = Field(default=None, foreign_key="retry.id")  # the retry that asked for this scan again


class IiifManifest(SQLModel, table=True):
    """A IIIF campaign's manifest, read once at listing (``pisar/iiif/storage.py``): its body kept for
    the annotation export's copy of it, or why it could not be read."""

    __tablename__ = "iiif_manifest"
    __table_args__ = (UniqueConstraint("campaign_id", "url", name="uq_iiif_manifest_campaign_url"),)

    id: int | None = Field(default=None, primary_key=True)
    campaign_id: int = Field(foreign_key="campaign.id")
    ordinal: int  # in the order the campaign's source gives its manifests
    url: str = Field(sa_column=Column(Text, nullable=False))
    slug: str | None = Field(default=None, sa_column=Column(Text))  # the first part of its canvases' keys
    version: int | None = None  # Presentation 2 or 3
    label: str | None = Field(default=None, sa_column=Column(Text))
    body: str | None = Field(default=None, sa_column=Column(Text))  # the manifest's JSON as read
    canvas_count: int = 0
    error_class: str | None = Field(default=None, max_length=100)
    error: str | None = Field(default=None, sa_column=Column(Text))


class IiifCanvas(SQLModel, table=True):
    """One canvas of a IIIF campaign's manifest: a page, keyed ``<manifest slug>/p<n>``, and where its
    image and layout come from (the provenance its lines' records carry)."""

    __tablename__ = "iiif_canvas"
    __table_args__ = (
        UniqueConstraint("campaign_id", "key", name="uq_iiif_canvas_campaign_key"),
        Index("ix_iiif_canvas_campaign_id", "campaign_id", "id"),  # the listing walks a campaign's canvases in recorded order
    )

    id: int | None = Field(default=None, primary_key=True)
    campaign_id: int = Field(foreign_key="campaign.id")
    manifest_id: int = Field(foreign_key="iiif_manifest.id")
    key: str = Field(sa_column=Column(Text().with_variant(Text(collation="C"), "postgresql"), nullable=False))
    ordinal: int
    canvas_id: str = Field(sa_column=Column(Text, nullable=False))
    label: str | None = Field(default=None, sa_column=Column(Text))
    width: int | None = None
    height: int | None = None
    service: str | None = Field(default=None, sa_column=Column(Text))  # the Image API service's base URL
    service_version: int | None = None
    image: str | None = Field(default=None, sa_column=Column(Text))  # the image's own URL (read without a service)
    layout: str | None = Field(default=None, sa_column=Column(Text))  # a linked PAGE/ALTO file
    layout_key: str | None = Field(default=None, sa_column=Column(Text))  # its layout file in the campaign's layouts_url


class Line(SQLModel, table=True):
    """One line image and its result; exactly one row per (campaign, key)."""

    __table_args__ = (
        UniqueConstraint("campaign_id", "key", name="uq_line_campaign_key"),
        Index("ix_line_shard", "shard_id"),
        Index("ix_line_campaign_status", "campaign_id", "status"),
        Index(
            "ix_line_awaiting_retry",
            "campaign_id",
            postgresql_where=text("retry_id IS NOT NULL"),
            sqlite_where=text("retry_id IS NOT NULL"),
        ),
    )

    # BIGINT in Postgres (hundreds of millions of lines); SQLite only autoincrements INTEGER.
    id: int | None = Field(
        default=None, sa_column=Column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True)
    )
    campaign_id: int = Field(foreign_key="campaign.id")
    shard_id: int = Field(foreign_key="shard.id")
    # Byte order in Postgres (migration 0007): exports stream in key order straight from the unique index.
    key: str = Field(sa_column=Column(Text().with_variant(Text(collation="C"), "postgresql"), nullable=False))
    status: str = Field(default=LineStatus.PENDING, max_length=10)
    text: str | None = Field(default=None, sa_column=Column(Text))
    confidence: float | None = None
    min_token_prob: float | None = None
    token_count: int | None = None
    error_class: str | None = Field(default=None, max_length=100)
    error: str | None = Field(default=None, sa_column=Column(Text))
    note: str | None = Field(default=None, sa_column=Column(Text))  # e.g. "first of 3 frames (GIF)": how the file was read
    flags: str | None = Field(default=None, sa_column=Column(Text))  # comma-separated (``pisar.flags``): max_length,repetition,empty,...
    width: int | None = None  # the line image's size as decoded, in pixels (ALTO/PAGE geometry)
    height: int | None = None
    model: str | None = Field(default=None, sa_column=Column(Text))  # id@revision of the model that wrote this result
    # Per-word confidence, one per word of ``pisar.words.words(text)``, space-separated (pisar/reader/confidence.py).
    word_confidences: str | None = Field(default=None, sa_column=Column(Text))
    # A page campaign's line: its TextLine's region, the scan it was cut from, its place in the page's reading order.
    region_id: str | None = Field(default=None, sa_column=Column(Text))
    image: str | None = Field(default=None, sa_column=Column(Text))
    reading_order: int | None = None
    retry_id: int | None = Field(default=None, foreign_key="retry.id")  # a retry asked for this line again; cleared by the new result
    worker: str | None = Field(default=None, max_length=300)
    finished_at: datetime | None = None


class Retry(SQLModel, table=True):
    """One `pisar retry`: who asked, what it selected, with which model, and how much it sent back."""

    id: int | None = Field(default=None, primary_key=True)
    campaign_id: int = Field(foreign_key="campaign.id", index=True)
    created_at: datetime = Field(default_factory=utcnow)
    requested_by: str = Field(max_length=300)
    selector: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    model_id: str | None = Field(default=None, sa_column=Column(Text))
    model_revision: str | None = Field(default=None, max_length=200)
    shard_count: int
    line_count: int


class LineHistory(SQLModel, table=True):
    """A result a retry replaced; the ``line`` row always holds the current one."""

    __tablename__ = "line_history"

    id: int | None = Field(
        default=None, sa_column=Column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True)
    )
    line_id: int = Field(sa_column=Column(BigInteger().with_variant(Integer, "sqlite"), ForeignKey("line.id"), nullable=False, index=True))
    retry_id: int = Field(foreign_key="retry.id")
    status: str = Field(max_length=10)
    text: str | None = Field(default=None, sa_column=Column(Text))
    confidence: float | None = None
    min_token_prob: float | None = None
    error_class: str | None = Field(default=None, max_length=100)
    error: str | None = Field(default=None, sa_column=Column(Text))
    flags: str | None = Field(default=None, sa_column=Column(Text))
    model: str | None = Field(default=None, sa_column=Column(Text))
    worker: str | None = Field(default=None, max_length=300)
    finished_at: datetime | None = None
