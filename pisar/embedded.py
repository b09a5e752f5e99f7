"""The composition layer beside the CLI: in-process execution, and where shards go back to.

``run_shards`` drives the same ``ShardRunner`` the Celery worker uses, from one process: ``pisar run``
and, when no broker is configured, ``retry`` and ``resume``. ``send_back`` chooses between that and
the feeder. Only this module and ``pisar/cli`` import both the worker and the producer.
"""

from __future__ import annotations

import os
import socket
import time
from collections import deque
from dataclasses import dataclass

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from pisar.catalog.models import Campaign, Shard
from pisar.catalog.shards import shard_name
from pisar.names import default_name
from pisar.safe_text import printable
from pisar.settings import Settings


@dataclass
class RunSummary:
    """What one in-process pass did."""

    shards: int = 0
    recognized: int = 0
    errors: int = 0
    quarantined: int = 0
    seconds: float = 0.0
    read_elsewhere: int = 0  # shards another process held and finished while this one waited

    def describe(self) -> str:
        """One line for the operator, naming quarantined shards when there are any."""
        text = f"{self.shards} shards run here: {self.recognized} lines, {self.errors} errors"
        if self.read_elsewhere:
            text += f"; {self.read_elsewhere} shards read by another process meanwhile"
        if self.quarantined:
            text += f"; {self.quarantined} shards quarantined (see `pisar status`)"
        return text


#: While another process holds a shard, look again this often (the holder's lease may be minutes long,
#: but it usually finishes sooner; a look is one read of the catalog).
HELD_POLL_SECONDS = 1.0


def run_shards(settings: Settings, campaign: Campaign, shard_ids: list[int], console: Console | None = None) -> RunSummary:
    """Run the given shards here until each is done or quarantined; returns what happened.

    Failed shards are retried with backoff. A shard another live process holds (a second `pisar
    run` of the campaign, a worker) is waited for, and taken over if its holder's lease runs out,
    so when this returns every shard has its final state, whoever read it. A node that cannot
    serve (``FatalError``: no device, a model that will not load) gives the shard back and the
    error goes to the caller, as a worker would stop.
    """
    summary = RunSummary()
    if not shard_ids:
        return summary
    from pisar.reader import ReaderCache  # a back-end (torch, transformers) loads only once there is work to do
    from pisar.worker.outcomes import Outcome
    from pisar.worker.runner import ShardRunner

    console = console or Console(stderr=True)
    runner = ShardRunner(settings, ReaderCache.from_settings(settings).get, worker=f"embedded@{socket.gethostname()}:{os.getpid()}")
    started = time.perf_counter()
    facts = shard_facts(settings.catalog_url, shard_ids)
    todo = deque(shard_ids)
    waited_for: set[int] = set()
    waiting: dict[int, float] = {}  # shard id -> monotonic time of its next look
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), TimeRemainingColumn())
    try:
        with Progress(*columns, console=console, transient=not console.is_terminal) as progress:
            task = progress.add_task(f"{printable(campaign.name)}: lines", total=sum(lines for _, lines in facts.values()))
            while todo or waiting:
                if not todo:
                    time.sleep(max(0.0, min(waiting.values()) - time.monotonic()))
                    due = [i for i, at in waiting.items() if at <= time.monotonic()]
                    todo.extend(sorted(due))
                    for shard_id in due:
                        del waiting[shard_id]
                    continue
                shard_id = todo.popleft()
                outcome = runner.run(campaign.id, shard_id)
                while (delay := outcome.resend_after(settings)) is not None and outcome.outcome is not Outcome.HELD:
                    if runner.node.reason is not None:
                        raise runner.node.reason
                    console.print(
                        f"{shard_name(campaign.name, facts[shard_id][0])} {outcome.outcome} ({outcome.error}); retrying in {delay:.0f}s",
                        markup=False,
                    )
                    time.sleep(delay)
                    outcome = runner.run(campaign.id, shard_id)
                if outcome.outcome in (Outcome.HELD, Outcome.FENCED):  # another process has it: look again soon
                    if shard_id not in waited_for:
                        waited_for.add(shard_id)
                        console.print(
                            f"{shard_name(campaign.name, facts[shard_id][0])} is being read by another process; waiting for it",
                            markup=False,
                        )
                    waiting[shard_id] = time.monotonic() + HELD_POLL_SECONDS
                    continue
                if outcome.outcome is Outcome.SKIPPED:
                    summary.read_elsewhere += 1
                else:
                    summary.shards += 1
                    summary.recognized += outcome.lines
                    summary.errors += outcome.errors
                    summary.quarantined += outcome.outcome is Outcome.QUARANTINED
                progress.advance(task, facts[shard_id][1])
    finally:
        runner.close()
    summary.seconds = time.perf_counter() - started
    return summary


def detect_pages(settings: Settings, campaign: Campaign, console: Console | None = None) -> int:
    """Detect every scan of a detect campaign not settled yet, here; returns how many this process detected.

    A scan another live process holds is waited for (its lease may run out and it is taken over),
    so when this returns every scan is settled and every read shard has left ``detecting``.
    """
    from pisar.catalog import pages
    from pisar.worker.detection import PageRunner, detector_from_settings
    from pisar.worker.outcomes import Outcome

    console = console or Console(stderr=True)
    todo = pages.to_detect(settings.catalog_url, campaign.id)
    if not todo:
        return 0
    runner = PageRunner(
        settings, lambda name: detector_from_settings(settings, name), worker=f"embedded@{socket.gethostname()}:{os.getpid()}"
    )
    detected = 0
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), TimeRemainingColumn())
    try:
        with Progress(*columns, console=console, transient=not console.is_terminal) as progress:
            task = progress.add_task(f"{printable(campaign.name)}: scans", total=len(todo))
            queue, settled = deque(todo), 0
            while queue or (queue := deque(pages.to_detect(settings.catalog_url, campaign.id))):  # a multi-page TIFF's further pages
                progress.update(task, total=max(settled + len(queue), len(todo)))
                page_id = queue.popleft()
                ran = runner.run(page_id)
                if ran.outcome is Outcome.BROKEN:
                    raise runner.node.reason or RuntimeError("the detector cannot serve")
                if ran.outcome in (Outcome.HELD, Outcome.FENCED):  # another process has it: look again soon
                    time.sleep(HELD_POLL_SECONDS)
                    queue.append(page_id)
                    continue
                delay = ran.resend_after(settings)
                if delay is not None:  # failed (retried with backoff), an outage, a stop
                    time.sleep(delay)
                    queue.append(page_id)
                    continue
                detected += ran.outcome is Outcome.DONE
                settled += 1
                progress.advance(task)
    finally:
        runner.close()
    return detected


def shard_facts(url: str, shard_ids: list[int]) -> dict[int, tuple[int, int]]:
    """Each shard's index in its campaign (how the operator knows it) and number of lines (the progress bar)."""
    from sqlalchemy import select

    from pisar.catalog.db import get_engine

    table = Shard.__table__
    facts: dict[int, tuple[int, int]] = {}
    with get_engine(url).connect() as conn:
        for start in range(0, len(shard_ids), 1000):
            query = select(table.c.id, table.c.index, table.c.line_count).where(table.c.id.in_(shard_ids[start : start + 1000]))
            facts.update((row.id, (row.index, row.line_count)) for row in conn.execute(query))
    return facts


def transcribe(
    settings: Settings,
    source: str,
    model: str,
    name: str | None,
    shard_size: int,
    console: Console,
    *,
    layout: str = "lines",
    crop: str | None = None,
    layouts: str | None = None,
) -> tuple[Campaign, RunSummary]:
    """Create the campaign (or resume it, same model only) and run every shard not done, here.

    Another process may be on the same campaign (a second `pisar run`): whoever creates it lists
    it, the other waits for the listing (or finishes it, if its lister died), and both read what
    is left, each waiting for the shards the other holds. Either returns only once every shard has
    its final state.
    """
    from pisar import model_ref
    from pisar.errors import ConfigError
    from pisar.producer.campaigns import find_campaign, shards_unfinished
    from pisar.producer.submit import CampaignExists, SubmitRequest, continue_listing, create_campaign, relist_unanswered

    url = settings.catalog_url
    name = default_name(source) if name is None else name  # a new campaign's name is checked by create_campaign
    campaign = find_campaign(url, name)
    if campaign is None:
        request = SubmitRequest(source, model, name, shard_size, settings.queue, layout=layout, crop=crop, layouts=layouts)
        try:
            campaign, listing = create_campaign(settings, request, wait_turn=True)
        except CampaignExists:  # another process created it a moment ago: join it
            campaign = find_campaign(url, name)
        else:
            listed = f"{listing.scans} scans to detect" if listing.scans else f"{campaign.line_count} lines"
            console.print(
                f"campaign {printable(name)}: {listed} in {campaign.shard_count} shards (skipped files: {listing.describe_skipped()})"
                + listing.still_owed(),
                markup=False,
            )
            if listing.scans:
                detect_pages(settings, campaign, console)
            summary = run_shards(settings, campaign, shards_unfinished(url, campaign.id), console)
            return find_campaign(url, name) or campaign, summary  # with the lines its detection found
    if campaign is None:  # created and removed again (its source held nothing) while this process looked
        raise ConfigError(f"campaign {printable(name)!r} vanished while starting; run again")
    wanted = model_ref.resolve(model_ref.parse(model))
    if (wanted.source, wanted.revision or "") != (campaign.model_id, campaign.model_revision):
        raise ConfigError(f"campaign {printable(name)!r} was run with model {campaign.model_id}; use another --name for {model}")
    console.print(f"campaign {printable(name)} exists: resuming", markup=False)
    relist_unanswered(settings, campaign)  # IIIF manifests that did not answer the last listing are asked again
    if campaign.listed_at is None:  # its listing was interrupted, or another process is listing it now
        listed = continue_listing(settings, campaign, wait_turn=True)
        console.print(
            f"{printable(name)}: listing finished: {listed.keys} lines in {listed.shards} shards{listed.still_owed()}", markup=False
        )
    detect_pages(settings, campaign, console)
    summary = run_shards(settings, campaign, shards_unfinished(url, campaign.id), console)
    return find_campaign(url, name) or campaign, summary  # with the totals of a listing another process finished


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


def redetect_and_read(settings: Settings, campaign: Campaign, shard_ids: list[int], console: Console) -> str:
    """Scans sent back to detection (``producer/redetect.py``): sent to the detect workers in
    distributed mode (the feeder publishes their read shards as they settle), detected and read here
    otherwise. Returns one line for the operator."""
    if settings.distributed:
        from pisar.producer.feeder import top_up_detect

        sent = top_up_detect(settings, campaign.queue)
        return f"{sent.sent} scans sent to detection on '{sent.queue}'; `pisar feed` publishes their read shards as they are detected"
    detected = detect_pages(settings, campaign, console)
    summary = run_shards(settings, campaign, shard_ids, console)
    return f"{detected} scans detected again; " + summary.describe()


def resume_campaign(settings: Settings, campaign: Campaign, console: Console) -> None:
    """Finish an interrupted listing (publishing as it goes), then send back every shard not done."""
    from pisar.producer.campaigns import shards_to_resume
    from pisar.producer.submit import continue_listing, relist_unanswered

    relist_unanswered(settings, campaign)  # IIIF manifests that did not answer the last listing are asked again
    if campaign.listed_at is None:
        tick = None
        if settings.distributed:
            from pisar.producer.feeder import top_up

            def tick() -> None:
                top_up(settings, campaign.queue)

        listed = continue_listing(settings, campaign, tick)
        console.print(
            f"{campaign.name}: listing finished: {listed.keys} lines in {listed.shards} shards (skipped files: {listed.describe_skipped()})"
            + listed.still_owed(),
            markup=False,
        )
    _resume_scans(settings, campaign, console)
    ids = shards_to_resume(settings.catalog_url, campaign.id)
    done = send_back(settings, campaign, ids, reset_attempts=False, console=console) if ids else "nothing to do"
    console.print(f"{campaign.name}: {len(ids)} shards not done; {done}", markup=False)


def _resume_scans(settings: Settings, campaign: Campaign, console: Console) -> None:
    """A detect campaign's scans not detected yet: sent again (their messages may be lost with Redis), or detected here."""
    from pisar.catalog import pages

    if not pages.to_detect(settings.catalog_url, campaign.id):
        return
    if settings.distributed:
        from pisar.producer.feeder import top_up_detect

        back = pages.reopen(settings.catalog_url, campaign.id)
        sent = top_up_detect(settings, campaign.queue)
        console.print(f"{campaign.name}: {back} scans back in line, {sent.sent} sent to detection on '{sent.queue}'", markup=False)
    else:
        detect_pages(settings, campaign, console)
