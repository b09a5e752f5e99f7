"""What half precision costs in accuracy: the same held-out lines read in fp32 and in bf16 (or fp16).

    python bench/precision.py                                  # the demo model on its 20 held-out sample lines
    python bench/precision.py --source ../shared/data/print-lines --held-out 0.11   # its 85 held-out lines
    python bench/precision.py --model DIR --source FOLDER      # any model, any NAME.png + NAME.gt.txt folder
    python bench/precision.py --fp8                            # also the FP8 encoder in bf16 (a CUDA GPU of 8.9+)

Both reads use Pisar's engine (fetch, decode, table preprocessing, batched generate). Prints one JSON
object: CER and WER of each dtype against the ground truth (jiwer, as the model card measures), the
CER difference in points, and the share of lines whose text is identical in both dtypes.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

from bench_paths import DEMO_MODEL, REPO  # bench/ is on sys.path when a script here runs
from worker_path import PisarRow, report  # bench/ is on sys.path when a script here runs


def read_all(
    model: Path, storage: Any, keys: list[str], dtype: str, device: str, batch_size: int, encoder_fp8: bool = False
) -> dict[str, str | None]:
    """Every key's text, read by the worker's path in ``dtype`` (with the FP8 encoder when asked)."""
    generation = {"num_beams": 1, "do_sample": False}
    row = PisarRow(model, storage, dtype, batch_size, device, fetch_threads=16, generation=generation, encoder_fp8=encoder_fp8)
    try:
        row.run(keys)
    finally:
        row.close()
    return row.texts


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, default=DEMO_MODEL)
    parser.add_argument("--source", type=Path, default=REPO / "samples" / "print-lines")
    parser.add_argument("--half", choices=["bfloat16", "float16"], default="bfloat16")
    parser.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument(
        "--fp8", action="store_true", help="also read in the half dtype with the FP8 encoder (PISAR_ENCODER_FP8; CUDA 8.9+)"
    )
    parser.add_argument("--held-out", type=float, help="only the keys `pisar train --val-share` held out at this share")
    args = parser.parse_args(argv)

    import jiwer

    from pisar.errors import FatalError
    from pisar.groundtruth import read_transcription
    from pisar.reader.devices import pick_device
    from pisar.storage import LocalStorage, list_images
    from pisar.train.data import is_held_out

    storage = LocalStorage(args.source)
    keys = [k for k in list_images(storage).keys if args.held_out is None or is_held_out(k, args.held_out)]
    full = read_all(args.model, storage, keys, "float32", args.device, args.batch_size)
    half = read_all(args.model, storage, keys, args.half, args.device, args.batch_size)
    truth = {key: read_transcription(storage, key) for key in full}
    keys = sorted(k for k, t in truth.items() if t is not None)
    if not keys:
        raise SystemExit(f"precision: no NAME.gt.txt beside the images in {args.source}")
    references = [truth[k] for k in keys]
    figures = {
        "model": str(args.model),
        "lines": len(keys),
        "device": str(pick_device(args.device)),
        "half": args.half,
        "cer_fp32": round(jiwer.cer(references, [full[k] for k in keys]), 5),
        "cer_half": round(jiwer.cer(references, [half[k] for k in keys]), 5),
        "wer_fp32": round(jiwer.wer(references, [full[k] for k in keys]), 5),
        "wer_half": round(jiwer.wer(references, [half[k] for k in keys]), 5),
        "identical_share": round(sum(full[k] == half[k] for k in keys) / len(keys), 4),
        "date": time.strftime("%Y-%m-%d"),
    }
    figures["cer_delta_points"] = round(100 * (figures["cer_half"] - figures["cer_fp32"]), 3)
    if args.fp8:  # the comparison PISAR_ENCODER_FP8 waits for before it may become a default
        try:
            fp8 = read_all(args.model, storage, keys, args.half, args.device, args.batch_size, encoder_fp8=True)
        except FatalError as exc:  # no FP8 here (device or torchao): say so beside the other figures
            figures["fp8_refused"] = str(exc)
            report(figures)
            return 0
        figures["cer_half_fp8_encoder"] = round(jiwer.cer(references, [fp8[k] for k in keys]), 5)
        figures["fp8_identical_to_half_share"] = round(sum(fp8[k] == half[k] for k in keys) / len(keys), 4)
        figures["fp8_cer_delta_points"] = round(100 * (figures["cer_half_fp8_encoder"] - figures["cer_half"]), 3)
    report(figures)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
