"""Creating a campaign: list the source, cut the sorted keys into shards, write it all to the catalog.

The catalog write is one transaction (campaign, shards, pending lines); publishing comes after,
so a crash in between leaves shards ``pending`` for ``pisar resume``, never half a campaign.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import insert
from sqlalchemy.exc import IntegrityError

from pisar import __version__, model_ref
from pisar.catalog.bulk import insert_pending_lines
from pisar.catalog.db import get_engine
from pisar.catalog.models import Campaign, Shard, ShardState
from pisar.constants import CONFIDENCE_FORMULA, DEFAULT_PRIORITY
from pisar.errors import ConfigError, NotFound, PisarError
from pisar.processor import describe_generation, describe_preprocessing, generation_overrides, load_processor
from pisar.producer.campaigns import find_campaign
from pisar.producer.manifest import read_manifest
from pisar.settings import Settings
from pisar.storage import Listing, list_images, open_storage

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
    manifest: Path | None = None  # keys from this file instead of a listing (``producer/manifest.py``)
    priority: int = DEFAULT_PRIORITY  # 0 (lowest) to 9 (most urgent): what the feeder publishes first


def cut(keys: list[str], size: int) -> Iterator[list[str]]:
    """Consecutive runs of ``size`` sorted keys: shard i holds keys[i*size:(i+1)*size]."""
    for start in range(0, len(keys), size):
        yield keys[start : start + size]


def create_campaign(settings: Settings, request: SubmitRequest) -> tuple[Campaign, Listing]:
    """Resolve the model, list the source and write the campaign; refuses an existing name."""
    url = settings.catalog_url
    if not request.name.strip():
        raise ConfigError("campaign name must not be empty")
    if find_campaign(url, request.name) is not None:
        raise CampaignExists(f"campaign {request.name!r} already exists: use `pisar resume {request.name}` or another --name")
    storage = open_storage(request.source_url, settings)  # cheap checks first: a bad URL fails at once
    ref = model_ref.resolve(model_ref.parse(request.model))
    processor = load_processor(ref)
    listing = read_manifest(request.manifest, getattr(storage, "prefix", "")) if request.manifest else list_images(storage)
    if not listing.keys:
        raise NotFound(f"no line images under {storage.url} (skipped: {dict(listing.skipped) or 'nothing'})")
    import torch
    import transformers

    campaign = Campaign(
        name=request.name,
        source_url=storage.url,
        model_id=ref.source,
        model_revision=ref.revision or "",
        dtype=settings.dtype,
        generation=describe_generation(ref, generation_overrides(settings.max_new_tokens, settings.num_beams)),
        preprocessing=describe_preprocessing(processor),
        confidence_formula=CONFIDENCE_FORMULA,
        versions={"pisar": __version__, "transformers": transformers.__version__, "torch": torch.__version__},
        queue=request.queue,
        priority=request.priority,
        shard_size=request.shard_size,
        line_count=len(listing.keys),
        skipped_files=dict(listing.skipped),
    )
    shards = list(cut(listing.keys, request.shard_size))
    campaign.shard_count = len(shards)
    with get_engine(url).begin() as conn:
        try:
            row = conn.execute(insert(Campaign.__table__).values(campaign.model_dump(exclude={"id"})).returning(Campaign.__table__.c.id))
        except IntegrityError:  # a concurrent submit of the same name won the race
            raise CampaignExists(f"campaign {request.name!r} already exists: use `pisar resume {request.name}`") from None
        campaign.id = row.scalar_one()
        shard_rows = [
            {"campaign_id": campaign.id, "index": i, "state": ShardState.PENDING.value, "line_count": len(keys)}
            for i, keys in enumerate(shards)
        ]
        ids = (
            conn.execute(insert(Shard.__table__).returning(Shard.__table__.c.id, sort_by_parameter_order=True), shard_rows).scalars().all()
        )
        insert_pending_lines(conn, campaign.id, ((shard_id, key) for shard_id, keys in zip(ids, shards, strict=True) for key in keys))
    log.info("campaign %s: %s lines in %s shards from %s", campaign.name, campaign.line_count, campaign.shard_count, storage.url)
    return campaign, listing
