"""`pisar train`: a new line reader, or a fine-tuned one, written as a folder `run` and `submit` load."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from pisar.cli.app import app, err, examples
from pisar.errors import ConfigError
from pisar.settings import get_settings


@app.command(
    epilog=examples(
        "pisar train ./gt-lines -o models/mine --from models/demo",
        "pisar train ./gt-lines -o models/new --preset small --synthetic-from-train --steps 9000",
    )
)
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

    normalizer(normalize)
    if preset not in PRESETS:
        raise ConfigError(f"unknown preset {preset!r}: use one of {', '.join(PRESETS)}")
    if save_dtype not in ("float32", "float16"):
        raise ConfigError(f"--save-dtype must be float32 or float16, not {save_dtype!r}")
    if synthetic and not Path(synthetic).is_file():
        raise ConfigError(f"synthetic text file {synthetic} does not exist")
    from pisar.train.loop import TrainConfig  # torch: after the options are checked, so a bad one is refused at once
    from pisar.train.loop import train as run_training

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
    from pisar.reader.devices import set_threads
    from pisar.worker.process_settings import apply_process_settings

    apply_process_settings(settings)
    if settings.torch_threads:
        set_threads(settings.torch_threads)
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), TimeRemainingColumn())
    with Progress(*columns, console=err) as progress:
        result = run_training(config, settings, progress)
    cer = f"{result.val_cer:.4f}" if result.val_cer is not None else "n/a"
    err.print(
        f"trained {result.steps} steps in {result.seconds:.0f}s on {result.train_lines} lines; held-out CER {cer} ({result.val_lines} lines) -> {output}"
    )
