"""Campaign commands: submit, status, resume, retry, export, review and review-import."""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Optional

import typer

from pisar.cli.app import CropOpt, LayoutOpt, LayoutsOpt, NameArg, app, catalog, err, examples, names, out
from pisar.constants import DEFAULT_PRIORITY, MAX_PRIORITY
from pisar.errors import ConfigError
from pisar.interrupt import stop_requested
from pisar.safe_text import shown
from pisar.settings import get_settings

if TYPE_CHECKING:  # imported by the commands that need them: `--help` stays instant
    from pisar.model_ref import ModelRef
    from pisar.producer.retry import RetryPlan


@app.command(
    epilog=examples(
        "pisar submit s3://scans/fond-1 --model models/mine --name fond-1",
        "pisar submit s3://scans/fond-1 --model org/model@3f2a1c --name fond-1-pages --layout xml --priority 7",
    )
)
def submit(
    source: Annotated[
        str, typer.Argument(help="s3://bucket/prefix, a folder, or IIIF: a manifest or collection URL or file, a file of manifest URLs")
    ],
    model: Annotated[str, typer.Option("--model", "-m", help="Model folder, or HUB_ID[@REVISION]")],
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
    layout: LayoutOpt = "lines",
    crop: CropOpt = None,
    layouts: LayoutsOpt = None,
) -> None:
    """List SOURCE (or read --manifest), write a campaign to the catalog and publish its first shards to the workers.

    Redis holds at most PISAR_QUEUE_HIGH_WATER shards per queue; `pisar feed` publishes the rest as it drains.
    """
    from pisar.producer.submit import SubmitRequest, submit_and_publish
    from pisar.queue import require_redis

    settings = get_settings()
    require_redis(settings)
    catalog(settings)
    request = SubmitRequest(
        source,
        model,
        name,
        shard_size or settings.shard_size,
        queue or settings.queue,
        manifest,
        priority,
        layout=layout,
        crop=crop,
        layouts=layouts,
    )
    err.print(submit_and_publish(settings, request).describe(), markup=False)


@app.command(epilog=examples("pisar status fond-1", "pisar status fond-1 --watch", "pisar status fond-1 --json"))
def status(
    name: NameArg,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output (stable keys, see the README)")] = False,
    watch: Annotated[bool, typer.Option("--watch", "-w", help="Refresh until the campaign finishes (Ctrl-C to stop)")] = False,
    interval: Annotated[float, typer.Option(min=0.2, help="Seconds between refreshes with --watch")] = 5.0,
) -> None:
    """Durable progress of a campaign, from the catalog: it survives restarts of Redis, Flower and workers."""
    from rich.live import Live

    from pisar.cli.status_view import status_view
    from pisar.producer.campaigns import get_campaign
    from pisar.producer.status import campaign_status

    settings = get_settings()
    url = catalog(settings)
    campaign = get_campaign(url, name)
    report = campaign_status(url, campaign)
    if as_json:
        print(json.dumps(report.as_json(), ensure_ascii=False, indent=2))
        return
    if not watch or report.finished:
        out.print(status_view(report))
        return
    with stop_requested() as stop:  # Ctrl-C ends the watch between two refreshes
        if out.is_terminal:
            with Live(status_view(report), console=out, auto_refresh=False) as live:
                while not report.finished and not stop.wait(interval):
                    report = campaign_status(url, campaign)
                    live.update(status_view(report), refresh=True)
        else:  # a pipe or a file: one screen per refresh, appended, so `| tee` shows progress as it goes
            out.print(status_view(report))
            while not report.finished and not stop.wait(interval):
                report = campaign_status(url, campaign)
                out.print(status_view(report))


@app.command(epilog=examples("pisar resume fond-1"))
def resume(name: NameArg) -> None:
    """Finish an interrupted listing, and re-publish every shard that is not done (after Redis lost its queue, or a crash)."""
    from pisar.embedded import resume_campaign
    from pisar.producer.campaigns import get_campaign

    settings = get_settings()
    campaign = get_campaign(catalog(settings), name)
    resume_campaign(settings, campaign, err)


@app.command(
    epilog=examples(
        "pisar retry fond-1 --errors FetchFailed,MissingObject --dry-run",
        "pisar retry fond-1 --below-confidence 0.6 --model models/better",
    )
)
def retry(
    name: NameArg,
    failed: Annotated[bool, typer.Option("--failed", help="Lines not read yet in failed or quarantined shards")] = False,
    errors: Annotated[Optional[str], typer.Option("--errors", help="Errored lines of these classes: NotAnImage,FetchFailed")] = None,
    shard: Annotated[Optional[list[int]], typer.Option("--shard", help="Shard index (repeat); alone: all its lines")] = None,
    below_confidence: Annotated[Optional[float], typer.Option("--below-confidence", help="ok lines under this confidence")] = None,
    flag: Annotated[
        Optional[str], typer.Option("--flag", help="ok lines with these flags: max_length,repetition,empty,unstorable_text")
    ] = None,
    model: Annotated[
        Optional[str], typer.Option("--model", help="Re-read with this model (DIR or HUB_ID@REVISION); both results are kept")
    ] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Print what would be re-run; change nothing")] = False,
    scan: Annotated[Optional[list[str]], typer.Option("--scan", help="A detect campaign: detect this scan again (its key; repeat)")] = None,
    scans_without_lines: Annotated[
        bool, typer.Option("--scans-without-lines", help="Detect again the scans where nothing was found")
    ] = False,
    failed_scans: Annotated[bool, typer.Option("--failed-scans", help="Detect again the scans that were quarantined")] = False,
    detector: Annotated[
        Optional[str], typer.Option("--detector", help="With the scan selectors: detect with this detector (default PISAR_DETECTOR)")
    ] = None,
) -> None:
    """Re-run exactly the lines selected; earlier results go to the line's history.

    With no selector: lines of failed shards, and every errored line except WorkerCrash. A detect
    campaign's scans can be detected again (--scan, --scans-without-lines, --failed-scans), their
    lines then read again.
    """
    if scan or scans_without_lines or failed_scans or detector:
        if failed or errors or shard or below_confidence is not None or flag or model:
            raise ConfigError("a retry detects scans again or re-reads lines, not both: run it twice")
        _redetect(name, tuple(scan or ()), scans_without_lines, failed_scans, detector, dry_run)
        return
    from pisar import model_ref
    from pisar.embedded import send_back
    from pisar.producer.campaigns import get_campaign
    from pisar.producer.retry import RetrySelector, apply, plan

    selector = RetrySelector(
        failed=failed, errors=names(errors), below_confidence=below_confidence, flags=names(flag), shards=tuple(shard or ())
    )
    ref = model_ref.resolve(model_ref.parse(model)) if model else None
    settings = get_settings()
    url = catalog(settings)
    campaign = get_campaign(url, name)
    if dry_run:
        _print_plan(name, plan(url, campaign.id, selector), ref, dry_run=True)
        return
    retry_id, covered = apply(url, campaign.id, selector, ref)
    _print_plan(name, covered, ref, dry_run=False, retry_id=retry_id)
    if covered.shard_ids:
        err.print(f"{name}: " + send_back(settings, campaign, covered.shard_ids, reset_attempts=True, console=err), markup=False)


def _redetect(name: str, keys: tuple[str, ...], without_lines: bool, failed: bool, detector: str | None, dry_run: bool) -> None:
    """`retry --scan ...`: the chosen scans detected again, then their lines read again."""
    from pisar.embedded import redetect_and_read
    from pisar.producer.campaigns import get_campaign
    from pisar.producer.redetect import ScanSelector, apply, plan
    from pisar.sources import line_source

    settings = get_settings()
    url = catalog(settings)
    campaign = get_campaign(url, name)
    if not line_source(campaign.layout).detects:
        raise ConfigError(
            f"campaign {shown(name)!r} reads {line_source(campaign.layout).describes}: only a --layout detect campaign has scans to detect"
        )
    selector = ScanSelector(keys, without_lines, failed, detector)
    covered = plan(url, campaign.id, selector) if dry_run else None
    retry_id = None
    if covered is None:
        retry_id, covered = apply(url, campaign.id, selector)
    verb = "would detect again" if dry_run else f"retry {retry_id}: detecting again" if retry_id else "nothing to detect again:"
    err.print(
        f"{shown(name)}: {verb} {covered.scans} scans in {len(covered.shard_ids)} shards, their {covered.lines} lines read again"
        + (f" (detector {shown(detector)})" if detector else "")
    )
    for reason, count in covered.reasons.items():
        err.print(f"  {shown(reason)}: {count} scans")
    _plan_tail(covered.examples, covered.running, "chosen scans", dry_run)
    if retry_id and not dry_run:
        err.print(f"{shown(name)}: " + redetect_and_read(settings, campaign, covered.shard_ids, err), markup=False)


def _print_plan(name: str, covered: RetryPlan, ref: ModelRef | None, dry_run: bool, retry_id: int | None = None) -> None:
    """What a retry covers, line by line of reasoning, on stderr."""
    verb = "would re-run" if dry_run else f"retry {retry_id}: re-running" if retry_id else "nothing to re-run:"
    with_model = f" with {ref}" if ref else ""
    err.print(f"{shown(name)}: {verb} {covered.lines} lines in {len(covered.shard_ids)} shards{with_model}")
    for reason, count in covered.lines_by_reason.items():
        err.print(f"  {shown(reason)}: {count} lines")
    if covered.shard_indexes:
        shown_indexes = ", ".join(map(str, covered.shard_indexes[:20])) + (" ..." if len(covered.shard_indexes) > 20 else "")
        err.print(f"  shards: {shown_indexes}")
    _plan_tail(covered.examples, covered.running, "selected lines", dry_run)


def _plan_tail(examples: list[str], running: int, what: str, dry_run: bool) -> None:
    """A retry plan's examples, what a worker holds and is left alone, and whether anything changed."""
    for key in examples:
        err.print(f"  e.g. {shown(key)}")
    if running:
        err.print(f"  {running} {what} are in shards a worker holds now: left alone, retry again when they finish")
    if dry_run:
        err.print("  nothing changed (--dry-run)")


@app.command(
    epilog=examples(
        "pisar export fond-1 -o fond-1.jsonl --min-confidence 0.9",
        "pisar export fond-1 --format page -o fond-1-pages/",
        "pisar export book-1 --format annotations -o web/book-1 --base-url https://archive.example/text/book-1",
    )
)
def export(
    name: NameArg,
    fmt: Annotated[
        str,
        typer.Option(
            "--format", "-f", help="jsonl, csv, parquet; per source folder: txt, alto, page; per page: miniocr, hocr, annotations (IIIF)"
        ),
    ] = "jsonl",
    output: Annotated[
        str, typer.Option("--output", "-o", help="File to write (- for stdout); a folder for txt, alto, page, miniocr, hocr, annotations")
    ] = "-",
    base_url: Annotated[
        Optional[str], typer.Option("--base-url", help="annotations: the URL OUT is published at (its files' ids; default its file:// URL)")
    ] = None,
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
    from pisar.sources import line_source
    from pisar.storage import open_storage

    only = ExportFilter(names(status), min_confidence, _parse_since(since))
    settings = get_settings()
    url = catalog(settings)
    campaign = get_campaign(url, name)
    about = {"campaign": campaign.name, "model": str(model_ref.ModelRef.of(campaign.model_id, campaign.model_revision))}
    source = line_source(campaign.layout)
    pages_from, name_of = None, None  # the layout files to write the readings back into
    if source.detects:
        from pisar.producer.detected_layouts import DetectedLayouts

        pages_from, name_of = DetectedLayouts(url, campaign.id), DetectedLayouts.file_name
    elif source.writes_back:
        pages_from = open_storage(campaign.source_url, settings, campaign.id)
    written = write_export(url, campaign.id, fmt, output, only, about, pages_from, name_of, base_url)
    pending = campaign.line_count - written.records - written.error_lines
    note = f"; {pending} lines pending or filtered out" if pending else ""
    err.print(written.describe(output if output != "-" else "stdout") + note, markup=False)


def _parse_since(value: str | None) -> datetime | None:
    """``--since`` as an aware datetime; a time without a zone is UTC."""
    from datetime import UTC

    if value is None:
        return None
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise ConfigError(f"--since {value!r} is not an ISO 8601 time, e.g. 2026-11-26 or 2026-11-26T14:00") from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


@app.command(epilog=examples("pisar review fond-1 --sample 200", "pisar review fond-1 -o checks/fond-1"))
def review(
    name: NameArg,
    sample: Annotated[int, typer.Option("--sample", min=1, max=100_000, help="Lines to sample, stratified by confidence")] = 100,
    output: Annotated[Optional[Path], typer.Option("--output", "-o", help="Folder for the package (default review-NAME)")] = None,
) -> None:
    """Write a review package (HTML + CSV) of sampled lines; `pisar review-import DIR/corrections.csv` reads it back."""
    from pisar.names import output_folder
    from pisar.producer.campaigns import get_campaign
    from pisar.producer.review import sample as sample_lines
    from pisar.producer.review import write_package
    from pisar.storage import open_storage

    settings = get_settings()
    url = catalog(settings)
    campaign = get_campaign(url, name)
    folder = output or output_folder("review", campaign.name)
    lines = sample_lines(url, campaign.id, sample)
    written = write_package(lines, open_storage(campaign.source_url, settings, campaign.id), folder, campaign.name)
    err.print(f"{written} lines to review in {folder / 'index.html'}; fill in {folder / 'corrections.csv'}", markup=False)


@app.command("review-import", epilog=examples("pisar review-import review-fond-1/corrections.csv"))
def review_import(sheet: Annotated[Path, typer.Argument(help="The filled-in corrections.csv of a review package")]) -> None:
    """Read a reviewed corrections.csv back as ground truth (NAME.png + NAME.gt.txt) for `pisar eval --gt` and `pisar train`."""
    from pisar.producer.review import import_corrections

    if not sheet.is_file():
        raise ConfigError(f"pisar review-import needs the filled-in corrections.csv, not {sheet}")
    done = import_corrections(sheet)
    err.print(
        f"{done.pairs} reviewed lines ({done.fixed} corrected) written as ground truth to {done.folder}; "
        f"{done.todo} rows left at todo. Use it with: pisar eval CAMPAIGN --gt {done.folder}",
        markup=False,
    )
