"""Commands that work in this process: `pisar run` (embedded mode) and `pisar eval`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer

from pisar.cli.app import CropOpt, LayoutOpt, LayoutsOpt, ModelOpt, app, catalog, err, examples
from pisar.safe_text import printable, shown
from pisar.settings import get_settings


@app.command(
    epilog=examples(
        "pisar run samples/print-lines --model models/demo -o results.jsonl --show 20",
        "pisar run s3://scans/fond-1 --model org/model@3f2a1c --name fond-1 -o fond-1.csv",
    )
)
def run(
    source: Annotated[
        str, typer.Argument(help="A folder, s3://bucket/prefix, or IIIF: a manifest or collection URL or file, a file of manifest URLs")
    ],
    model: ModelOpt,
    name: Annotated[Optional[str], typer.Option("--name", "-n", help="Campaign name (default: from SOURCE)")] = None,
    output: Annotated[str, typer.Option("--output", "-o", help="Results file (JSONL; .csv for CSV)")] = "results.jsonl",
    shard_size: Annotated[Optional[int], typer.Option(min=1, max=100_000, help="Lines per shard")] = None,
    show: Annotated[int, typer.Option(min=0, help="Also print the first N lines' text and confidence")] = 0,
    layout: LayoutOpt = "lines",
    crop: CropOpt = None,
    layouts: LayoutsOpt = None,
) -> None:
    """Embedded mode: list, shard and transcribe SOURCE in this process; rerun to resume.

    Exits 0 only when OUTPUT holds every line's final record (a text or an error); 4 when shards
    ended quarantined and their lines have none.
    """
    from itertools import islice

    from pisar.embedded import transcribe
    from pisar.errors import Incomplete
    from pisar.names import check_name, default_name
    from pisar.producer.atomic_output import check_writable
    from pisar.producer.export import export as write_export
    from pisar.producer.export import iter_records
    from pisar.storage import open_storage

    name = default_name(source) if name is None else check_name(name)
    check_writable(output)  # before any work: a read-only folder is found now, not after inference
    settings = get_settings()
    open_storage(source, settings)  # a missing folder or bucket is refused before a catalog file is made
    url = catalog(settings)
    campaign, summary = transcribe(
        settings, source, model, name, shard_size or settings.shard_size, err, layout=layout, crop=crop, layouts=layouts
    )
    fmt = "csv" if output.endswith(".csv") else "jsonl"
    count = write_export(url, campaign.id, fmt, output).records
    if show:
        _print_lines(list(islice(iter_records(url, campaign.id), show)))
    shown_name = printable(campaign.name)
    err.print(
        f"{shown_name}: {count} results in {output}; recognized {summary.recognized} lines now "
        f"({summary.errors} errors) in {summary.seconds:.1f}s",
        markup=False,
    )
    missing = campaign.line_count - count
    if missing:
        raise Incomplete(
            f"{shown_name}: {missing} of {campaign.line_count} lines have no result: their shards are quarantined "
            f"(`pisar status {shown_name}` says why; `pisar retry {shown_name} --failed` reads them again)"
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


@app.command("eval", epilog=examples("pisar eval fond-1 --normalize naf", "pisar eval ./lines --model models/demo -o eval-lines"))
def evaluate(
    target: Annotated[str, typer.Argument(help="A campaign name, or with --model a folder / s3://bucket/prefix to transcribe first")],
    gt: Annotated[Optional[str], typer.Option("--gt", help="Folder or s3:// prefix with NAME.gt.txt files (default: the source)")] = None,
    model: Annotated[Optional[str], typer.Option("--model", "-m", help="Embedded: transcribe TARGET with this model first")] = None,
    name: Annotated[Optional[str], typer.Option("--name", "-n", help="Campaign name with --model (default: from TARGET)")] = None,
    normalize: Annotated[str, typer.Option("--normalize", help="Label normalization for both sides: none or naf")] = "none",
    output: Annotated[Optional[str], typer.Option("--output", "-o", help="Folder for lines.csv, summary.json, calibration.png")] = None,
    gt_from_xml: Annotated[
        bool,
        typer.Option(
            "--gt-from-xml",
            help="A page campaign: the text its PAGE/ALTO files already hold (the default for one); a detect campaign: "
            "NAME.xml beside each scan (or in --gt), its lines matched to the detected ones by overlap",
        ),
    ] = False,
) -> None:
    """CER/WER against ground truth, and how well confidence predicts errors."""

    from pisar.errors import ConfigError
    from pisar.groundtruth import normalizer
    from pisar.names import output_folder
    from pisar.producer.campaigns import get_campaign
    from pisar.producer.evaluate import score_lines, summarize, write_outputs
    from pisar.sources import line_source
    from pisar.storage import open_storage

    normalizer(normalize)  # a bad choice fails before any work
    settings = get_settings()
    url = catalog(settings)
    if model:
        from pisar.embedded import transcribe

        campaign, _ = transcribe(settings, target, model, name, settings.shard_size, err)
    else:
        campaign = get_campaign(url, target)
    source = line_source(campaign.layout)
    if gt_from_xml and not (source.ground_truth_inside or source.detects):
        raise ConfigError(
            f"campaign {printable(campaign.name)!r} reads {source.describes}; --gt-from-xml is for page campaigns (--layout xml or detect)"
        )
    gt_storage = open_storage(gt, settings) if gt else open_storage(campaign.source_url, settings, campaign.id)
    layout_scores = None
    if source.detects:  # lines found by detection: matched to the true layout's lines first
        from pisar.producer.evaluate_pages import score_detected

        scores, missing, layout_scores = score_detected(url, campaign, gt_storage, normalize)
    else:
        from_layouts = source.ground_truth_inside and (gt_from_xml or gt is None)
        scores, missing = score_lines(url, campaign, gt_storage, normalize, from_layouts)
    report = summarize(campaign, scores, missing, normalize)
    report.layout = layout_scores.as_dict() if layout_scores else None
    paths = write_outputs(report, scores, Path(output) if output else output_folder("eval", campaign.name))
    print(json.dumps({k: v for k, v in report.__dict__.items() if k != "calibration"}, ensure_ascii=False))
    err.print(f"{report.lines_scored} lines scored ({missing} without ground truth); wrote {', '.join(str(p) for p in paths.values())}")
