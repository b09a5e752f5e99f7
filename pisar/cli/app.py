"""The ``pisar`` Typer app and what its commands share: consoles, common options, the checked catalog."""

from __future__ import annotations

from typing import Annotated, Optional

import typer
from rich.console import Console

from pisar.settings import Settings

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
LayoutOpt = Annotated[
    str,
    typer.Option(
        "--layout",
        help="lines: every image is a line; xml: PAGE/ALTO files, their TextLines cut from the scans they name; "
        "detect: page scans with no layout, their lines detected first (PISAR_DETECTOR)",
    ),
]
LayoutsOpt = Annotated[
    Optional[str],
    typer.Option(
        "--layouts",
        help="IIIF with --layout xml: a folder or s3:// prefix of PAGE/ALTO files, each matched to the canvas its image name names",
    ),
]
CropOpt = Annotated[
    Optional[str],
    typer.Option("--crop", help="How a page line is cut: polygon (outside it white; default for xml) or box (default for detect)"),
]


def examples(*commands: str) -> str:
    """A command's ``--help`` epilog: its examples, kept as written (click rewraps paragraphs, not ``\\b`` blocks)."""
    return "Examples:\n\n\b\n" + "\n".join(f"  {command}" for command in commands)


def catalog(settings: Settings) -> str:
    """The catalog URL, checked: SQLite (embedded) migrates itself, Postgres must be upgraded."""
    from pisar.catalog.db import ensure_ready

    url = settings.catalog_url
    ensure_ready(url, auto_upgrade=url.startswith("sqlite"))
    return url


def names(value: str | None) -> tuple[str, ...]:
    """``a, b,c`` as ``("a", "b", "c")``: the comma lists of options."""
    return tuple(part.strip() for part in (value or "").split(",") if part.strip())
