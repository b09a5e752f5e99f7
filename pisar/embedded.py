"""The composition layer beside the CLI: in-process execution, and where shards go back to.

``run_shards`` drives the same ``ShardRunner`` the Celery worker uses, from one process: ``pisar run``
and, when no broker is configured, ``retry`` and ``resume``. ``send_back`` chooses between that and
the feeder. Only this module and ``pisar/cli`` import both the worker and the producer.
"""

from __future__ import annotations

import os
import socket
import time
from dataclasses import dataclass

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from pisar.catalog.models import Campaign, Shard
from pisar.settings import Settings


@dataclass
class RunSummary:
    """What one in-process pass did."""

    shards: int = 0
    recognized: int = 0
    errors: int = 0
    quarantined: int = 0
    seconds: float = 0.0

    def describe(self) -> str:
        """One line for the operator, naming quarantined shards when there are any."""
        text = f"{self.shards} shards run here: {self.recognized} lines, {self.errors} errors"
        if self.quarantined:
            text += f"; {self.quarantined} shards quarantined (see `pisar status`)"
        return text


def shard_line_counts(url: str, shard_ids: list[int]) -> int:
    from sqlalchemy import func, select

    from pisar.catalog.db import get_engine

    if not shard_ids:
        return 0
    table = Shard.__table__
    with get_engine(url).connect() as conn:
        return int(conn.execute(select(func.coalesce(func.sum(table.c.line_count), 0)).where(table.c.id.in_(shard_ids))).scalar_one())


def run_shards(settings: Settings, campaign: Campaign, shard_ids: list[int], console: Console | None = None) -> RunSummary:
    """Run the given shards here, retrying failed ones with backoff until done or quarantined.

    A node that cannot serve (``FatalError``: no device, a model that will not load) gives the shard
    back and the error goes to the caller, as a worker would stop.
    """
    summary = RunSummary()
    if not shard_ids:
        return summary
    from pisar.worker.engine import EngineCache  # torch and transformers: only once there is work to do
    from pisar.worker.shard import Outcome, ShardRunner

    console = console or Console(stderr=True)
    runner = ShardRunner(settings, EngineCache.from_settings(settings), worker=f"embedded@{socket.gethostname()}:{os.getpid()}")
    started = time.perf_counter()
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), TimeRemainingColumn())
    try:
        with Progress(*columns, console=console, transient=not console.is_terminal) as progress:
            task = progress.add_task(f"{campaign.name}: lines", total=shard_line_counts(settings.catalog_url, shard_ids))
            for shard_id in shard_ids:
                outcome = runner.run(campaign.id, shard_id)
                while (delay := outcome.resend_after(settings)) is not None:
                    if runner.broken is not None:
                        raise runner.broken
                    console.print(f"shard {shard_id} {outcome.outcome} ({outcome.error}); retrying in {delay:.0f}s", markup=False)
                    time.sleep(delay)
                    outcome = runner.run(campaign.id, shard_id)
                summary.shards += 1
                summary.recognized += outcome.lines
                summary.errors += outcome.errors
                summary.quarantined += outcome.outcome is Outcome.QUARANTINED
                progress.advance(task, outcome.lines)
    finally:
        runner.close()
    summary.seconds = time.perf_counter() - started
    return summary


def default_name(source: str) -> str:
    """A campaign name from a source: the folder's name, or ``bucket-prefix`` for S3."""
    if source.startswith("s3://"):
        return source.removeprefix("s3://").rstrip("/").replace("/", "-")
    return source.rstrip("/").rsplit("/", 1)[-1] or "campaign"


def transcribe(
    settings: Settings,
    source: str,
    model: str,
    name: str | None,
    shard_size: int,
    console: Console,
    *,
    layout: str = "lines",
    crop: str = "polygon",
) -> tuple[Campaign, RunSummary]:
    """Create the campaign (or resume it, same model only) and run every shard not done, here."""
    from pisar import model_ref
    from pisar.errors import ConfigError
    from pisar.producer.campaigns import find_campaign, shards_to_resume
    from pisar.producer.submit import SubmitRequest, create_campaign

    url = settings.catalog_url
    name = name or default_name(source)
    campaign = find_campaign(url, name)
    if campaign is None:
        request = SubmitRequest(source, model, name, shard_size, settings.queue, layout=layout, crop=crop)
        campaign, listing = create_campaign(settings, request)
        console.print(
            f"campaign {name}: {campaign.line_count} lines in {campaign.shard_count} shards (skipped files: {listing.describe_skipped()})",
            markup=False,
        )
    else:
        wanted = model_ref.resolve(model_ref.parse(model))
        if (wanted.source, wanted.revision or "") != (campaign.model_id, campaign.model_revision):
            raise ConfigError(f"campaign {name!r} was run with model {campaign.model_id}; use another --name for {model}")
        console.print(f"campaign {name} exists: resuming")
    return campaign, run_shards(settings, campaign, shards_to_resume(url, campaign.id), console)


def send_back(settings: Settings, campaign: Campaign, shard_ids: list[int], *, reset_attempts: bool, console: Console) -> str:
    """Shards back in line (``shards.reopen``): published for the workers in distributed mode, run here otherwise.

    Returns one line for the operator.
    """
    from pisar.catalog import shards

    reopened = shards.reopen(
        settings.catalog_url, campaign.id, shard_ids, reset_attempts=reset_attempts, max_attempts=settings.max_attempts
    )
    if settings.distributed:
        from pisar.producer.feeder import describe_published, top_up

        return f"{reopened} shards back in line, {describe_published([top_up(settings, campaign.queue)], campaign, reopened)}"
    return run_shards(settings, campaign, shard_ids, console).describe()


def resume_campaign(settings: Settings, campaign: Campaign, console: Console) -> None:
    """Finish an interrupted listing (publishing as it goes), then send back every shard not done."""
    from pisar.producer.campaigns import shards_to_resume

    if campaign.listed_at is None:
        from pisar.producer.submit import continue_listing

        tick = None
        if settings.distributed:
            from pisar.producer.feeder import top_up

            def tick() -> None:
                top_up(settings, campaign.queue)

        listed = continue_listing(settings, campaign, tick)
        console.print(
            f"{campaign.name}: listing finished: {listed.keys} lines in {listed.shards} shards (skipped files: {listed.describe_skipped()})",
            markup=False,
        )
    ids = shards_to_resume(settings.catalog_url, campaign.id)
    done = send_back(settings, campaign, ids, reset_attempts=False, console=console) if ids else "nothing to do"
    console.print(f"{campaign.name}: {len(ids)} shards not done; {done}", markup=False)
