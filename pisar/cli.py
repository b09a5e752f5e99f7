"""The ``pisar`` command: each subcommand parses options, calls one library function, sets the exit code.

Heavy imports (torch, transformers, Celery workers) happen inside commands so ``--help`` is instant.
Operator-facing failures print one line, ``pisar: error: ...``, and exit non-zero; never a traceback.
"""

from __future__ import annotations

import json
import os
import socket
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.table import Table

from pisar.constants import DEFAULT_PRIORITY, MAX_PRIORITY
from pisar.errors import ConfigError, PisarError
from pisar.interrupt import stop_requested
from pisar.safe_text import printable, shown
from pisar.settings import Settings, get_settings

app = typer.Typer(
    name="pisar",
    help="Bulk transcription of scanned text-line images with VisionEncoderDecoder models.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)
db_app = typer.Typer(help="Catalog database schema.", no_args_is_help=True)
app.add_typer(db_app, name="db")

err = Console(stderr=True, soft_wrap=True)
out = Console(soft_wrap=True)

ModelOpt = Annotated[str, typer.Option("--model", "-m", help="Model folder, or HUB_ID[@REVISION]")]
NameArg = Annotated[str, typer.Argument(help="Campaign name")]


def _catalog(settings: Settings) -> str:
    """The catalog URL, checked: SQLite (embedded) migrates itself, Postgres must be upgraded."""
    from pisar.catalog.db import ensure_ready

    url = settings.catalog_url
    ensure_ready(url, auto_upgrade=url.startswith("sqlite"))
    return url


@db_app.command("upgrade")
def db_upgrade(revision: Annotated[str, typer.Argument(help="Target revision")] = "head") -> None:
    """Apply Alembic migrations to the catalog."""
    from pisar.catalog.db import upgrade

    settings = get_settings()
    now = upgrade(settings.catalog_url, revision)
    err.print(f"catalog at revision {now}")


@app.command()
def submit(
    source: Annotated[str, typer.Argument(help="s3://bucket/prefix or a folder")],
    model: ModelOpt,
    name: Annotated[str, typer.Option("--name", "-n", help="Unique campaign name")],
    shard_size: Annotated[Optional[int], typer.Option(min=1, max=100_000, help="Lines per shard")] = None,
    queue: Annotated[Optional[str], typer.Option(help="Celery queue (default PISAR_QUEUE)")] = None,
    manifest: Annotated[
        Optional[str],
        typer.Option("--manifest", help="Keys from a .txt/.csv/.parquet file (.gz too), or an S3 Inventory manifest.json (s3:// too)"),
    ] = None,
    priority: Annotated[
        int, typer.Option("--priority", min=0, max=MAX_PRIORITY, help="0 (lowest) to 9 (most urgent): an urgent campaign overtakes others")
    ] = DEFAULT_PRIORITY,
) -> None:
    """List SOURCE (or read --manifest), write a campaign to the catalog and publish its first shards to the workers.

    Redis holds at most PISAR_QUEUE_HIGH_WATER shards per queue; `pisar feed` publishes the rest as it drains.
    """
    from pisar.producer.feeder import top_up
    from pisar.producer.submit import SubmitRequest, create_campaign
    from pisar.queue import require_redis

    settings = get_settings()
    require_redis(settings)
    _catalog(settings)
    request = SubmitRequest(source, model, name, shard_size or settings.shard_size, queue or settings.queue, manifest, priority)
    fed = []  # shards run while it lists: every tick publishes what is listed so far
    campaign, listing = create_campaign(settings, request, tick=lambda: fed.append(top_up(settings, request.queue)))
    fed.append(top_up(settings, campaign.queue))
    err.print(
        f"campaign {campaign.name}: {campaign.line_count} lines in {campaign.shard_count} shards, {_published(fed, campaign)}",
        f"(skipped files: {listing.describe_skipped()})",
        markup=False,
    )


def _published(fed: list, campaign, wanted: int | None = None) -> str:  # noqa: ANN001 - TopUps, Campaign
    """``"12 published to 'q'"`` over these top-ups, and who publishes the rest (of ``wanted``,
    default every shard) when the window is full."""
    sent = sum(f.by_campaign.get(campaign.name, 0) for f in fed)
    text = f"{sent} published to '{campaign.queue}'"
    last = fed[-1]
    if last.busy:
        return text + " (a running `pisar feed` publishes the rest)"
    if sent < (campaign.shard_count if wanted is None else wanted):
        text += f"; `pisar feed` publishes the rest as workers drain the queue ({last.waiting + last.sent} waiting now)"
    return text


@app.command()
def status(
    name: NameArg,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output (stable keys, see the README)")] = False,
    watch: Annotated[bool, typer.Option("--watch", "-w", help="Refresh until the campaign finishes (Ctrl-C to stop)")] = False,
    interval: Annotated[float, typer.Option(min=0.2, help="Seconds between refreshes with --watch")] = 5.0,
) -> None:
    """Durable progress of a campaign, from the catalog: it survives restarts of Redis, Flower and workers."""
    from rich.live import Live

    from pisar.producer.campaigns import get_campaign
    from pisar.producer.status import campaign_status

    settings = get_settings()
    url = _catalog(settings)
    campaign = get_campaign(url, name)
    report = campaign_status(url, campaign)
    if as_json:
        print(json.dumps(report.as_json(), ensure_ascii=False, indent=2))
        return
    if not watch or report.finished:
        out.print(_status_view(report))
        return
    with stop_requested() as stop:  # Ctrl-C ends the watch between two refreshes
        if out.is_terminal:
            with Live(_status_view(report), console=out, auto_refresh=False) as live:
                while not report.finished and not stop.wait(interval):
                    report = campaign_status(url, campaign)
                    live.update(_status_view(report), refresh=True)
        else:  # a pipe or a file: one screen per refresh, appended, so `| tee` shows progress as it goes
            out.print(_status_view(report))
            while not report.finished and not stop.wait(interval):
                report = campaign_status(url, campaign)
                out.print(_status_view(report))


def _status_view(report):  # noqa: ANN001, ANN202 - CampaignStatus -> rich Group, imported lazily
    """The status screen as one renderable, so ``--watch`` can redraw it in place."""
    from rich.console import Group
    from rich.text import Text

    from pisar.producer.status import RECENT_MINUTES

    parts: list = []

    def line(value: str, style: str = "") -> None:
        parts.append(Text(value, style=style))

    done = report.lines["ok"] + report.lines["error"]
    line(f"{printable(report.name)}  {printable(report.source_url)}", "bold")
    line(f"model {printable(report.model)} @ {report.model_revision[:19]}")
    share = f" ({done / report.lines_total:.1%})" if report.lines_total else ""
    line(
        f"lines {done}/{report.lines_total} done{share}: {report.lines['ok']} ok, {report.lines['error']} error, "
        f"{report.lines['pending']} pending" + ("" if report.listing_done else " (still listing: more lines to come)")
    )
    shards = Table("shard state", "count")
    for state, count in report.shards.items():
        if count:
            shards.add_row(state, str(count))
    parts.append(shards)
    if report.error_classes:
        errors = Table("error class", "lines", "example key")
        for row in report.error_classes:
            errors.add_row(shown(row["error_class"]), str(row["count"]), shown(row["example_key"]))
        parts.append(errors)
    if report.shard_errors:
        failures = Table("shard", "state", "attempts", "last error")
        for row in report.shard_errors:
            failures.add_row(str(row["shard"]), row["state"], str(row["attempts"]), shown(row["error"]))
        parts.append(failures)
    if report.lines_per_second_overall or report.lines_per_second_recent:
        recent = report.lines_per_second_recent or 0.0
        overall = report.lines_per_second_overall or 0.0
        eta = f"; ETA {_duration(report.eta_seconds)}" if report.eta_seconds else ""
        line(f"throughput {recent:.2f} lines/s over the last {RECENT_MINUTES} min of work, {overall:.2f} since start{eta}")
    if report.workers_recent:
        names = ", ".join(printable(w) for w in report.workers_recent[:8]) + (" ..." if len(report.workers_recent) > 8 else "")
        line(f"workers in the last {RECENT_MINUTES} min: {len(report.workers_recent)} ({names})")
    if report.lines_awaiting_retry:
        line(f"{report.lines_awaiting_retry} lines are waiting to be re-read by a retry")
    for retry in report.retries[:3]:
        model = f" with {printable(retry['model'])}" if retry["model"] else ""
        chosen = {k: v for k, v in retry["selector"].items() if v not in (False, None, [])} or "default"
        line(f"retry {retry['retry']} at {retry['at'][:19]} by {printable(retry['by'])}: {retry['lines']} lines, {chosen}{model}")
    if report.stale_leases:
        line(f"{report.stale_leases} running shards have expired leases: `pisar resume {printable(report.name)}`", "yellow")
    if report.duplicate_deliveries:
        line(f"{report.duplicate_deliveries} duplicate deliveries were skipped")
    return Group(*parts)


def _duration(seconds: float) -> str:
    """``3h 05m``, ``4m 10s`` or ``12s``: an ETA a person reads at a glance."""
    whole = int(seconds)
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h {minutes:02d}m"
    return f"{minutes}m {secs:02d}s" if minutes else f"{secs}s"


def _dispatch(settings: Settings, url: str, campaign, shard_ids: list[int], reset_attempts: bool) -> str:  # noqa: ANN001
    """Back in line for the feeder in distributed mode; run here when no broker is configured."""
    if settings.distributed:
        from pisar.producer.feeder import release, top_up

        released = release(url, campaign.id, shard_ids, reset_attempts)
        return f"{released} shards back in line, {_published([top_up(settings, campaign.queue)], campaign, released)}"
    from pisar.embedded import run_shards
    from pisar.producer.campaigns import mark_queued

    mark_queued(url, campaign.id, shard_ids, reset_attempts)
    return run_shards(settings, campaign, shard_ids, err).describe()


@app.command()
def retry(
    name: NameArg,
    failed: Annotated[bool, typer.Option("--failed", help="Lines not read yet in failed or quarantined shards")] = False,
    errors: Annotated[Optional[str], typer.Option("--errors", help="Errored lines of these classes: NotAnImage,FetchFailed")] = None,
    shard: Annotated[Optional[list[int]], typer.Option("--shard", help="Shard index (repeat); alone: all its lines")] = None,
    below_confidence: Annotated[Optional[float], typer.Option("--below-confidence", help="ok lines under this confidence")] = None,
    flag: Annotated[Optional[str], typer.Option("--flag", help="ok lines with these flags: max_length,repetition")] = None,
    model: Annotated[
        Optional[str], typer.Option("--model", help="Re-read with this model (DIR or HUB_ID@REVISION); both results are kept")
    ] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Print what would be re-run; change nothing")] = False,
) -> None:
    """Re-run exactly the lines selected; earlier results go to the line's history.

    With no selector: lines of failed shards, and every errored line except WorkerCrash.
    """
    from pisar import model_ref
    from pisar.producer.campaigns import get_campaign
    from pisar.producer.retry import RetrySelector, apply, plan

    selector = RetrySelector(
        failed=failed,
        errors=_names(errors),
        below_confidence=below_confidence,
        flags=_names(flag),
        shards=tuple(shard or ()),
    )
    ref = model_ref.resolve(model_ref.parse(model)) if model else None
    settings = get_settings()
    url = _catalog(settings)
    campaign = get_campaign(url, name)
    if dry_run:
        _print_plan(name, plan(url, campaign.id, selector), ref, dry_run=True)
        return
    retry_id, covered = apply(url, campaign.id, selector, ref)
    _print_plan(name, covered, ref, dry_run=False, retry_id=retry_id)
    if covered.shard_ids:
        err.print(f"{name}: " + _dispatch(settings, url, campaign, covered.shard_ids, reset_attempts=True), markup=False)


def _names(value: str | None) -> tuple[str, ...]:
    return tuple(part.strip() for part in (value or "").split(",") if part.strip())


def _print_plan(name: str, covered, ref, dry_run: bool, retry_id: int | None = None) -> None:  # noqa: ANN001 - RetryPlan, ModelRef
    """What a retry covers, line by line of reasoning, on stderr."""
    verb = "would re-run" if dry_run else f"retry {retry_id}: re-running" if retry_id else "nothing to re-run:"
    with_model = f" with {ref}" if ref else ""
    err.print(f"{shown(name)}: {verb} {covered.lines} lines in {len(covered.shard_ids)} shards{with_model}")
    for reason, count in covered.lines_by_reason.items():
        err.print(f"  {shown(reason)}: {count} lines")
    if covered.shard_indexes:
        shown_indexes = ", ".join(map(str, covered.shard_indexes[:20])) + (" ..." if len(covered.shard_indexes) > 20 else "")
        err.print(f"  shards: {shown_indexes}")
    for key in covered.examples:
        err.print(f"  e.g. {shown(key)}")
    if covered.running:
        err.print(f"  {covered.running} selected lines are in shards a worker holds now: left alone, retry again when they finish")
    if covered.unknown_shards:
        err.print(f"  no shard with index {', '.join(map(str, covered.unknown_shards))} in this campaign")
    if dry_run:
        err.print("  nothing changed (--dry-run)")


@app.command()
def review(
    name: Annotated[str, typer.Argument(help="Campaign to sample, or `import` to read a filled-in sheet back")],
    sheet: Annotated[Optional[Path], typer.Argument(help="With `import`: the corrections.csv to read")] = None,
    sample: Annotated[int, typer.Option("--sample", min=1, max=100_000, help="Lines to sample, stratified by confidence")] = 100,
    output: Annotated[Optional[Path], typer.Option("--output", "-o", help="Folder for the package (default review-NAME)")] = None,
) -> None:
    """Write a review package (HTML + CSV) of sampled lines, or import the reviewed CSV as ground truth.

    pisar review NAME --sample 100 -o DIR; then pisar review import DIR/corrections.csv
    """
    from pisar.producer.review import import_corrections, write_package
    from pisar.producer.review import sample as sample_lines

    if name == "import":
        if sheet is None or not sheet.is_file():
            raise ConfigError(f"pisar review import needs the filled-in corrections.csv, not {sheet or 'nothing'}")
        done = import_corrections(sheet)
        err.print(
            f"{done.pairs} reviewed lines ({done.fixed} corrected) written as ground truth to {done.folder}; "
            f"{done.todo} rows left at todo. Use it with: pisar eval CAMPAIGN --gt {done.folder}",
            markup=False,
        )
        return
    from pisar.producer.campaigns import get_campaign
    from pisar.storage import open_storage

    settings = get_settings()
    url = _catalog(settings)
    campaign = get_campaign(url, name)
    folder = output or Path(f"review-{name}")
    lines = sample_lines(url, campaign.id, sample)
    written = write_package(lines, open_storage(campaign.source_url, settings), folder, campaign.name)
    err.print(f"{written} lines to review in {folder / 'index.html'}; fill in {folder / 'corrections.csv'}", markup=False)


@app.command()
def resume(name: NameArg) -> None:
    """Finish an interrupted listing, and re-publish every shard that is not done (after Redis lost its queue, or a crash)."""
    from pisar.producer.campaigns import get_campaign, shards_to_resume

    settings = get_settings()
    url = _catalog(settings)
    campaign = get_campaign(url, name)
    if campaign.listed_at is None:
        from pisar.producer.submit import continue_listing

        tick = None
        if settings.distributed:
            from pisar.producer.feeder import top_up

            tick = lambda: top_up(settings, campaign.queue)  # noqa: E731
        listed = continue_listing(settings, campaign, tick)
        err.print(f"{name}: listing finished: {listed.keys} lines in {listed.shards} shards (skipped files: {listed.describe_skipped()})")
    ids = shards_to_resume(url, campaign.id)
    err.print(
        f"{name}: {len(ids)} shards not done; "
        + (_dispatch(settings, url, campaign, ids, reset_attempts=False) if ids else "nothing to do"),
        markup=False,
    )


@app.command()
def feed(
    once: Annotated[bool, typer.Option("--once", help="One pass, then exit (for cron or a test)")] = False,
    heartbeat: Annotated[
        Optional[Path], typer.Option(help="Touch this file after every pass, for a container healthcheck (see compose.yaml)")
    ] = None,
) -> None:
    """The producer's loop: top queues up from pending shards (back-pressure) and re-queue dead workers' shards.

    Every PISAR_FEED_INTERVAL_SECONDS it publishes pending shards, most urgent campaign first, while
    fewer than PISAR_QUEUE_LOW_WATER wait in Redis (up to PISAR_QUEUE_HIGH_WATER); every
    PISAR_REAP_INTERVAL_SECONDS it returns shards of dead workers (expired leases) to the queue,
    or quarantines them after max attempts. One per deployment is enough; a second is harmless.
    """
    import time

    from pisar.producer.feeder import feed as feed_queues
    from pisar.queue import require_redis

    settings = get_settings()
    url = _catalog(settings)
    if not settings.distributed:
        raise ConfigError("pisar feed needs a broker (PISAR_REDIS_URL); in embedded mode rerun `pisar run`, which reclaims expired shards")
    require_redis(settings)
    import redis
    from sqlalchemy.exc import OperationalError

    from pisar.errors import ServiceUnavailable

    outages = (redis.RedisError, OperationalError, ServiceUnavailable, ConnectionError)
    next_reap = 0.0
    with stop_requested() as stop:  # SIGTERM (docker stop) or Ctrl-C: finish the pass, then exit 0
        while True:
            try:
                if time.monotonic() >= next_reap:
                    _reap_once(settings, url)
                    next_reap = time.monotonic() + settings.reap_interval_seconds
                for fed in feed_queues(settings):
                    if fed.sent:
                        err.print(fed.describe(), markup=False)
            except outages as exc:  # the loop outlives an outage of Redis or the catalog
                if once:
                    raise
                reason = printable(str(exc).splitlines()[0] if str(exc) else "")
                err.print(f"feed: {type(exc).__name__}: {reason}; retrying", markup=False)
            if heartbeat is not None:  # the loop is alive, outage or not: the outage is Redis's or the catalog's
                heartbeat.touch()
            if once or stop.wait(settings.feed_interval_seconds):
                return


@app.command(hidden=True)
def reap(
    once: Annotated[bool, typer.Option("--once", help="One pass, then exit")] = False,
) -> None:
    """Former name of `pisar feed`, kept so existing deployments keep working."""
    feed(once=once)


def _reap_once(settings: Settings, url: str) -> None:
    from pisar.producer.publish import publish
    from pisar.producer.reaper import reap as reap_once

    reaped = reap_once(url, settings.max_attempts)
    for (campaign_id, queue), ids in reaped.requeue.items():
        publish(settings, campaign_id, queue, ids)
    for key in reaped.poisoned:
        err.print(f"set aside {shown(key)}: its worker died reading it (WorkerCrash)")
    if reaped.requeued or reaped.quarantined:
        err.print(f"reaped {reaped.requeued} shards back to the queue, quarantined {len(reaped.quarantined)}")


@app.command()
def export(
    name: NameArg,
    fmt: Annotated[str, typer.Option("--format", "-f", help="jsonl, csv, parquet, or per source folder: txt, alto, page")] = "jsonl",
    output: Annotated[str, typer.Option("--output", "-o", help="File to write (- for stdout); a folder for txt, alto and page")] = "-",
    status: Annotated[str, typer.Option("--status", help="Lines to include: ok, error, or ok,error")] = "ok,error",
    min_confidence: Annotated[Optional[float], typer.Option("--min-confidence", help="Only lines at or above this confidence")] = None,
    since: Annotated[
        Optional[str], typer.Option("--since", help="Only lines finished at or after this time (ISO 8601, UTC if no zone)")
    ] = None,
) -> None:
    """Write a campaign's results in key order: one record per line image, or one file per source folder."""
    from pisar import model_ref
    from pisar.producer.campaigns import get_campaign
    from pisar.producer.export import ExportFilter
    from pisar.producer.export import export as write_export

    only = ExportFilter(_names(status), min_confidence, _parse_since(since))
    settings = get_settings()
    url = _catalog(settings)
    campaign = get_campaign(url, name)
    about = {"campaign": campaign.name, "model": str(model_ref.ModelRef.of(campaign.model_id, campaign.model_revision))}
    written = write_export(url, campaign.id, fmt, output, only, about)
    pending = campaign.line_count - written.records - written.error_lines
    note = f"; {pending} lines pending or filtered out" if pending else ""
    err.print(written.describe(output if output != "-" else "stdout") + note, markup=False)


def _parse_since(value: str | None):  # noqa: ANN202 - datetime | None, imported lazily
    """``--since`` as an aware datetime; a time without a zone is UTC."""
    from datetime import UTC, datetime

    if value is None:
        return None
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise ConfigError(f"--since {value!r} is not an ISO 8601 time, e.g. 2026-11-26 or 2026-11-26T14:00") from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


@app.command()
def run(
    source: Annotated[str, typer.Argument(help="A folder or s3://bucket/prefix")],
    model: ModelOpt,
    name: Annotated[Optional[str], typer.Option("--name", "-n", help="Campaign name (default: from SOURCE)")] = None,
    output: Annotated[str, typer.Option("--output", "-o", help="Results file (JSONL; .csv for CSV)")] = "results.jsonl",
    shard_size: Annotated[Optional[int], typer.Option(min=1, max=100_000, help="Lines per shard")] = None,
    show: Annotated[int, typer.Option(min=0, help="Also print the first N lines' text and confidence")] = 0,
) -> None:
    """Embedded mode: list, shard and transcribe SOURCE in this process; rerun to resume."""
    from itertools import islice

    from pisar.embedded import transcribe
    from pisar.producer.export import export as write_export
    from pisar.producer.export import iter_records

    settings = get_settings()
    url = _catalog(settings)
    campaign, summary = transcribe(settings, source, model, name, shard_size or settings.shard_size, err)
    fmt = "csv" if output.endswith(".csv") else "jsonl"
    count = write_export(url, campaign.id, fmt, output).records
    if show:
        _print_lines(list(islice(iter_records(url, campaign.id), show)))
    quarantined = f"; {summary.quarantined} shards quarantined (see `pisar status {campaign.name}`)" if summary.quarantined else ""
    err.print(
        f"{campaign.name}: {count} results in {output}; recognized {summary.recognized} lines now "
        f"({summary.errors} errors) in {summary.seconds:.1f}s{quarantined}"
    )


def _print_lines(records: list[dict]) -> None:
    """A table of key, confidence and text (or the error) on stdout, for a reader rather than a script."""
    from rich.console import Console
    from rich.table import Table

    table = Table("key", "confidence", "text")
    widest = max((len(r["key"]) + len(r["text"] or "") for r in records), default=0)
    for record in records:
        confidence = "" if record["confidence"] is None else f"{record['confidence']:.3f}"
        text = shown(record["text"]) if record["status"] == "ok" else f"[red]{shown(record['error_class'])}[/red]"
        table.add_row(shown(record["key"]), confidence, text)
    Console(width=max(100, widest + 24)).print(table)  # whole lines, never wrapped mid-word


@app.command("eval")
def evaluate(
    target: Annotated[str, typer.Argument(help="A campaign name, or with --model a folder / s3://bucket/prefix to transcribe first")],
    gt: Annotated[Optional[str], typer.Option("--gt", help="Folder or s3:// prefix with NAME.gt.txt files (default: the source)")] = None,
    model: Annotated[Optional[str], typer.Option("--model", "-m", help="Embedded: transcribe TARGET with this model first")] = None,
    name: Annotated[Optional[str], typer.Option("--name", "-n", help="Campaign name with --model (default: from TARGET)")] = None,
    normalize: Annotated[str, typer.Option("--normalize", help="Label normalization for both sides: none or naf")] = "none",
    output: Annotated[Optional[str], typer.Option("--output", "-o", help="Folder for lines.csv, summary.json, calibration.png")] = None,
) -> None:
    """CER/WER against ground truth, and how well confidence predicts errors."""

    from pisar.groundtruth import normalizer
    from pisar.producer.campaigns import get_campaign
    from pisar.producer.evaluate import score_lines, summarize, write_outputs
    from pisar.storage import open_storage

    normalizer(normalize)  # a bad choice fails before any work
    settings = get_settings()
    url = _catalog(settings)
    if model:
        from pisar.embedded import transcribe

        campaign, _ = transcribe(settings, target, model, name, settings.shard_size, err)
    else:
        campaign = get_campaign(url, target)
    scores, missing = score_lines(url, campaign, open_storage(gt or campaign.source_url, settings), normalize)
    report = summarize(campaign, scores, missing, normalize)
    paths = write_outputs(report, scores, Path(output or f"eval-{campaign.name}"))
    print(json.dumps({k: v for k, v in report.__dict__.items() if k != "calibration"}, ensure_ascii=False))
    err.print(f"{report.lines_scored} lines scored ({missing} without ground truth); wrote {', '.join(str(p) for p in paths.values())}")


@app.command()
def train(
    data: Annotated[list[str], typer.Argument(help="Folders or s3:// prefixes of NAME.png + NAME.gt.txt pairs")],
    output: Annotated[str, typer.Option("--output", "-o", help="Model folder to write (checkpoints go in OUTPUT/checkpoint)")],
    base: Annotated[Optional[str], typer.Option("--from", help="Fine-tune this model folder or HUB_ID@REVISION")] = None,
    preset: Annotated[str, typer.Option(help="Shape of a new model when --from is not given: small or test")] = "small",
    synthetic: Annotated[Optional[str], typer.Option(help="Text file, one line per line image to render")] = None,
    synthetic_from_train: Annotated[
        bool, typer.Option("--synthetic-from-train", help="Also render the training split's texts and reshuffles of their words")
    ] = False,
    synthetic_share: Annotated[float, typer.Option(min=0.0, max=1.0, help="Share of synthetic lines per batch")] = 0.5,
    span_share: Annotated[float, typer.Option(min=0.0, max=1.0, help="Share of synthetic samples that are 1-4 word spans")] = 0.5,
    ctc_weight: Annotated[
        Optional[float],
        typer.Option(min=0.0, max=1.0, help="Weight of the auxiliary CTC loss (default 0.5 for a new model, 0 with --from)"),
    ] = None,
    normalize: Annotated[str, typer.Option(help="Label normalization: none or naf")] = "none",
    augment: Annotated[bool, typer.Option("--augment", help="Vary margins, scale, slant, blur and threshold of real lines")] = False,
    val_share: Annotated[float, typer.Option(min=0.0, max=0.5, help="Share of real lines held out by key hash")] = 0.1,
    steps: Annotated[int, typer.Option(min=1, help="Optimizer steps")] = 2000,
    batch_size: Annotated[int, typer.Option(min=1, help="Lines per step")] = 16,
    lr: Annotated[float, typer.Option(min=0.0, help="Peak learning rate")] = 5e-4,
    warmup: Annotated[int, typer.Option(min=0, help="Warm-up steps")] = 200,
    eval_every: Annotated[int, typer.Option(min=1, help="Validate every N steps")] = 250,
    save_every: Annotated[int, typer.Option(min=1, help="Checkpoint every N steps")] = 250,
    seed: Annotated[int, typer.Option(help="Random seed")] = 0,
    save_dtype: Annotated[str, typer.Option(help="float32 or float16 weights in the final folder")] = "float32",
    resume: Annotated[bool, typer.Option("--resume", help="Continue from OUTPUT/checkpoint")] = False,
) -> None:
    """Train a new line reader or fine-tune one on ground truth; writes a folder `run` and `submit` load."""
    from pathlib import Path

    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    from pisar.groundtruth import normalizer
    from pisar.random_model import PRESETS
    from pisar.train.loop import TrainConfig
    from pisar.train.loop import train as run_training

    normalizer(normalize)
    if preset not in PRESETS:
        raise ConfigError(f"unknown preset {preset!r}: use one of {', '.join(PRESETS)}")
    if save_dtype not in ("float32", "float16"):
        raise ConfigError(f"--save-dtype must be float32 or float16, not {save_dtype!r}")
    if synthetic and not Path(synthetic).is_file():
        raise ConfigError(f"synthetic text file {synthetic} does not exist")
    config = TrainConfig(
        output=Path(output),
        sources=data,
        base_model=base,
        preset=preset,
        synthetic_text=Path(synthetic) if synthetic else None,
        synthetic_from_train=synthetic_from_train,
        synthetic_share=synthetic_share if synthetic or synthetic_from_train else 0.0,
        span_share=span_share,
        ctc_weight=ctc_weight,
        normalize=normalize,
        augment=augment,
        val_share=val_share,
        steps=steps,
        batch_size=batch_size,
        learning_rate=lr,
        warmup_steps=warmup,
        eval_every=eval_every,
        save_every=save_every,
        seed=seed,
        save_dtype=save_dtype,
        resume=resume,
    )
    settings = get_settings()
    from pisar.worker.engine import apply_process_settings

    apply_process_settings(settings)
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), TimeRemainingColumn())
    with Progress(*columns, console=err) as progress:
        result = run_training(config, settings, progress)
    cer = f"{result.val_cer:.4f}" if result.val_cer is not None else "n/a"
    err.print(
        f"trained {result.steps} steps in {result.seconds:.0f}s on {result.train_lines} lines; held-out CER {cer} ({result.val_lines} lines) -> {output}"
    )


@app.command()
def worker(
    queue: Annotated[Optional[str], typer.Option(help="Queue to consume (default PISAR_QUEUE)")] = None,
    hostname: Annotated[Optional[str], typer.Option(help="Celery node name (default pisar-<gpu or pid>@host)")] = None,
    model: Annotated[Optional[str], typer.Option("--model", "-m", help="Preload this model at start (default PISAR_MODEL)")] = None,
    loglevel: Annotated[str, typer.Option(help="Log level")] = "INFO",
) -> None:
    """Start one Celery worker process (run one per GPU, e.g. with CUDA_VISIBLE_DEVICES)."""
    from pisar import model_ref
    from pisar.queue import configure, delivery_problems, require_redis

    if model:
        os.environ["PISAR_MODEL"] = model  # the forked child reads it in worker_process_init
        get_settings.cache_clear()
    settings = get_settings()
    if settings.model:
        model_ref.resolve(model_ref.parse(settings.model))  # a bad model is one line here, not a crashing child
    require_redis(settings)
    _catalog(settings)
    celery_app = configure(settings)
    import pisar.worker.tasks  # noqa: F401 - registers run_shard
    from pisar.worker import stopping

    problems = delivery_problems(celery_app.conf, settings)
    if problems:
        raise ConfigError("refusing to start, settings would lose or duplicate work: " + "; ".join(problems))
    stopping.install_parent()  # SIGTERM: finish the shard within PISAR_STOP_TIMEOUT_SECONDS or give it back
    gpu = os.environ.get("CUDA_VISIBLE_DEVICES")
    node = hostname or f"pisar-{'gpu' + gpu.replace(',', '_') if gpu else os.getpid()}@{socket.gethostname()}"
    celery_app.worker_main(
        [
            "worker",
            f"--loglevel={loglevel}",
            "--pool=prefork",
            "--concurrency=1",
            f"--queues={queue or settings.queue}",
            f"--hostname={node}",
            "--events",
            "--without-mingle",
        ]
    )


@app.command()
def metrics(
    port: Annotated[int, typer.Option(min=1, max=65535, help="HTTP port of /metrics")] = 9809,
    bind: Annotated[str, typer.Option(help="Address to listen on")] = "0.0.0.0",
) -> None:
    """Serve Prometheus metrics of the queues and the catalog: queue depth, shards and lines per campaign."""
    from prometheus_client import REGISTRY, start_http_server

    from pisar.producer.metrics import CatalogCollector

    settings = get_settings()
    _catalog(settings)
    REGISTRY.register(CatalogCollector(settings))
    try:
        start_http_server(port, addr=bind)
    except OSError as exc:
        raise ConfigError(f"cannot listen on {bind}:{port}: {exc.strerror or exc}") from None
    err.print(f"pisar metrics on http://{bind}:{port}/metrics")
    with stop_requested() as stop:  # SIGTERM (docker stop) or Ctrl-C: exit 0
        stop.wait()


@app.command()
def flower(
    port: Annotated[int, typer.Option(help="HTTP port")] = 5555,
    address: Annotated[str, typer.Option(help="Bind address")] = "127.0.0.1",
    no_auth: Annotated[bool, typer.Option("--no-auth", help="Serve Flower without a password (a trusted network only)")] = False,
) -> None:
    """Start Flower on Pisar's Celery app (live workers and tasks), behind basic auth (PISAR_FLOWER_BASIC_AUTH)."""
    from pisar.flower_auth import configure_auth
    from pisar.queue import configure, require_redis

    settings = get_settings()
    credentials = settings.flower_basic_auth.get_secret_value() if settings.flower_basic_auth else None
    guard = configure_auth(credentials, no_auth)
    require_redis(settings)
    err.print(f"Flower on http://{address}:{port} with {guard}", markup=False)
    configure(settings).start(["flower", f"--port={port}", f"--address={address}"])


def main() -> None:
    """Console entry point: one readable line for every operator error."""
    command = typer.main.get_command(app)
    try:
        code = command.main(args=sys.argv[1:], prog_name="pisar", standalone_mode=False)
    except typer.Abort:
        print("pisar: aborted", file=sys.stderr)
        sys.exit(130)
    except typer.TyperException as exc:  # typer's own click: usage errors, bad option values
        message = exc.format_message() if hasattr(exc, "format_message") else str(exc)
        print(f"pisar: error: {message}", file=sys.stderr)
        sys.exit(getattr(exc, "exit_code", 2))
    except PisarError as exc:
        print(f"pisar: error: {exc}", file=sys.stderr)
        sys.exit(exc.exit_code)
    except OSError as exc:  # an output path that is a file, a folder, read-only, on a full disk
        where = f": {exc.filename}" if exc.filename else ""
        print(f"pisar: error: {exc.strerror or exc}{where}", file=sys.stderr)
        sys.exit(1)
    except KeyboardInterrupt:
        sys.exit(130)
    sys.exit(code if isinstance(code, int) else 0)


if __name__ == "__main__":
    main()
