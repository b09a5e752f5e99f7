"""Inference benchmark: the model card's loop, plain Hugging Face batching, and Pisar's engine, side by side.

    python bench/engine.py                          # reference-size stand-in (556 M parameters), GPU if present
    python bench/engine.py --standin small --lines 256   # same shape, 3.6 M parameters: a quick CPU run
    python bench/engine.py --model models/demo      # any real model folder
    python bench/engine.py --from-s3                # row (c) reads from a throwaway SeaweedFS instead of the folder

Rows, on the same real line images (``../shared/data/print-lines``, repeated to ``--lines``):
  (a) the model card's loop: one image at a time, processor + generate, fp32;
  (b) plain HF batching as a competent user writes it: processor on a list of PIL images, generate
      on batches of B, bf16 on GPU (fp32 on CPU);
  (c) Pisar's engine as a worker runs it: fetch, decode, preprocess in the thread pool, overlapped
      with batched generate (``ShardRunner._transcribe``).
Every row decodes the same number of tokens (min = max new tokens) with greedy search, so random
weights cannot stop early. Prints one JSON object (also written to ``--out``).
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data" / "print-lines"


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--standin", choices=["large", "small"], default="large", help="random-weight model of the reference shape")
    parser.add_argument("--model", type=Path, help="a real model folder instead of a stand-in")
    parser.add_argument("--lines", type=int, default=2048, help="line images for rows (b) and (c)")
    parser.add_argument("--seed-lines", type=int, default=64, help="line images for the slow row (a) and the fp32 parity check")
    parser.add_argument("--batch-size", type=int, default=0, help="lines per generate call (0: 64 on GPU, 16 on CPU)")
    parser.add_argument("--max-new-tokens", type=int, default=40)
    parser.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    parser.add_argument("--source", type=Path, default=DATA, help="folder of line images")
    parser.add_argument("--from-s3", action="store_true", help="row (c) fetches from a throwaway SeaweedFS")
    parser.add_argument("--fetch-threads", type=int, default=16)
    parser.add_argument("--out", type=Path, default=REPO / "build" / "bench-engine.json")
    return parser.parse_args(argv)


def standin(kind: str, folder: Path) -> Path:
    """Build (once) the random-weight stand-in; its tokenizer is trained on the shared texts."""
    from pisar.random_model import build_random_model, read_texts

    target = folder / f"standin-{kind}"
    if not (target / "config.json").exists():
        build_random_model(target, read_texts([DATA]), preset=f"bench-{kind}")
    return target


def line_files(source: Path, count: int) -> list[Path]:
    from pisar.storage import is_image_key

    files = sorted(p for p in source.iterdir() if is_image_key(p.name))
    if not files:
        raise SystemExit(f"bench: no line images in {source}")
    return [files[i % len(files)] for i in range(count)]


def seed_loop(model_dir: Path, files: list[Path], tokens: int, device: Any) -> tuple[float, list[str]]:
    """Row (a): the model card's code, one line at a time in fp32."""
    import torch
    from PIL import Image
    from transformers import VisionEncoderDecoderModel

    from pisar.model_ref import ModelRef
    from pisar.processor import load_processor

    processor = load_processor(ModelRef(str(model_dir), None))
    model = VisionEncoderDecoderModel.from_pretrained(model_dir).to(device).eval()
    texts = []
    with torch.inference_mode():
        generate_one(model, processor, [Image.open(files[0]).convert("RGB")], tokens, device, torch.float32)  # warm-up
        started = time.perf_counter()
        for path in files:
            image = Image.open(path).convert("RGB")
            texts += generate_one(model, processor, [image], tokens, device, torch.float32)
        synchronize(device)
        elapsed = time.perf_counter() - started
    del model
    return len(files) / elapsed, texts


def generate_one(model: Any, processor: Any, images: list, tokens: int, device: Any, dtype: Any) -> list[str]:
    pixel_values = processor(images=images, return_tensors="pt").pixel_values.to(device, dtype)
    ids = model.generate(pixel_values, max_new_tokens=tokens, min_new_tokens=tokens, num_beams=1, do_sample=False)
    return processor.batch_decode(ids, skip_special_tokens=True)


def hf_batched(model_dir: Path, files: list[Path], tokens: int, device: Any, batch_size: int) -> float:
    """Row (b): processor on a list of PIL images, generate on batches, half precision on GPU."""
    import torch
    from PIL import Image
    from transformers import VisionEncoderDecoderModel

    from pisar.model_ref import ModelRef
    from pisar.processor import load_processor

    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    processor = load_processor(ModelRef(str(model_dir), None))
    model = VisionEncoderDecoderModel.from_pretrained(model_dir, dtype=dtype).to(device).eval()
    with torch.inference_mode():
        generate_one(model, processor, [Image.open(p).convert("RGB") for p in files[:batch_size]], tokens, device, dtype)  # warm-up
        synchronize(device)
        started = time.perf_counter()
        for start in range(0, len(files), batch_size):
            images = [Image.open(p).convert("RGB") for p in files[start : start + batch_size]]
            generate_one(model, processor, images, tokens, device, dtype)
        synchronize(device)
        elapsed = time.perf_counter() - started
    del model
    return len(files) / elapsed


def pisar_engine(model_dir: Path, keys: list[str], storage: Any, args: argparse.Namespace, dtype: str, batch_size: int) -> dict[str, Any]:
    """Row (c): the worker's own path, ``ShardRunner._transcribe``, on an engine loaded the worker's way."""
    from pisar.model_ref import ModelRef
    from pisar.settings import Settings
    from pisar.worker.engine import Engine
    from pisar.worker.shard import ShardRunner

    settings = Settings(batch_size=batch_size, fetch_threads=args.fetch_threads, device=args.device, dtype=dtype)
    engine = Engine(ModelRef(str(model_dir), None), device=args.device, dtype=dtype)
    runner = ShardRunner(settings, lambda campaign: engine, worker="bench")
    generation = {"max_new_tokens": args.max_new_tokens, "min_new_tokens": args.max_new_tokens, "num_beams": 1, "do_sample": False}
    try:
        runner._transcribe(keys[:batch_size], storage, engine, generation, lambda: None)  # warm-up: kernels, pools
        synchronize(engine.device)
        started = time.perf_counter()
        results, load_s, generate_s = runner._transcribe(keys, storage, engine, generation, lambda: None)
        synchronize(engine.device)
        elapsed = time.perf_counter() - started
    finally:
        runner.close()
    errors = [r for r in results if r.status != "ok"]
    if errors:
        raise SystemExit(f"bench: {len(errors)} lines failed in the engine, first: {errors[0].error_class}: {errors[0].error}")
    return {
        "lines_per_s": len(keys) / elapsed,
        "input_wait_share": load_s / elapsed,
        "generate_share": generate_s / elapsed,
        "texts": {r.key: r.text for r in results},
        "engine": engine.describe(),
        "fast_preprocessing": engine.fast_preprocess is not None,
        "sdpa_decoder_layers": engine.sdpa_layers,
    }


def preprocessing_rate(model_dir: Path, files: list[Path]) -> dict[str, float]:
    """Lines per second per core: the processor vs Pisar's table preprocessor, on decoded lines."""
    from pisar.model_ref import ModelRef
    from pisar.processor import load_processor
    from pisar.worker.images import ImageLimits, decode_line
    from pisar.worker.preprocess import LinePreprocessor

    processor = load_processor(ModelRef(str(model_dir), None))
    fast = LinePreprocessor.build(processor.image_processor)
    limits = ImageLimits(89_478_485, 4, 16_384)
    decoded = [decode_line(p.read_bytes(), limits) for p in files]
    started = time.perf_counter()
    for line in decoded:
        processor(images=line.image, return_tensors="np")
    slow = len(decoded) / (time.perf_counter() - started)
    rates = {"processor_lines_per_s_per_core": slow}
    if fast is not None:
        started = time.perf_counter()
        for line in decoded:
            fast(line.line)
        rates["pisar_lines_per_s_per_core"] = len(decoded) / (time.perf_counter() - started)
    return rates


def synchronize(device: Any) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize()


def peak_memory_mb(device: Any) -> float:
    import torch

    if device.type == "cuda":
        return torch.cuda.max_memory_allocated() / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def versions() -> dict[str, str]:
    import torch
    import transformers

    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "cuda": str(torch.version.cuda),
    }


def open_source(args: argparse.Namespace, files: list[Path], workdir: Path) -> tuple[Any, list[str], Any]:
    """Storage and keys for row (c): the folder itself, or the same files uploaded to a throwaway SeaweedFS."""
    from pisar.settings import Settings
    from pisar.storage import LocalStorage, S3Storage

    unique = sorted(set(files))
    if not args.from_s3:
        return LocalStorage(args.source), [p.name for p in files], None
    import os

    import boto3

    sys.path.insert(0, str(REPO))
    from infra.local_services import start_seaweedfs

    weed = start_seaweedfs(workdir / "weed")
    os.environ.update(weed.env)
    client = boto3.client("s3", endpoint_url=weed.url)
    client.create_bucket(Bucket="bench")
    for path in unique:
        client.put_object(Bucket="bench", Key=f"lines/{path.name}", Body=path.read_bytes())
    storage = S3Storage("bench", "lines/", Settings(s3_endpoint_url=weed.url, fetch_threads=args.fetch_threads))
    return storage, [f"lines/{p.name}" for p in files], weed


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    import torch

    from pisar.worker.engine import pick_device, pick_dtype

    device = pick_device(args.device)
    dtype = str(pick_dtype("auto", device)).removeprefix("torch.")
    batch_size = args.batch_size or (64 if device.type == "cuda" else 16)
    workdir = Path(tempfile.mkdtemp(prefix="pisar-bench-"))
    model_dir = args.model or standin(args.standin, REPO / "build")
    files = line_files(args.source, args.lines)
    seed_files = files[: args.seed_lines]

    storage, keys, weed = open_source(args, files, workdir)
    try:
        seed_rate, seed_texts = seed_loop(model_dir, seed_files, args.max_new_tokens, device)
        hf_rate = hf_batched(model_dir, files, args.max_new_tokens, device, batch_size)
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats()
        pisar = pisar_engine(model_dir, keys, storage, args, dtype, batch_size)
        peak = peak_memory_mb(device)
        # Parity: the engine's fp32 path on the seed lines must read exactly what the model card's loop reads.
        parity = pisar if dtype == "float32" else pisar_engine(model_dir, keys[: len(seed_files)], storage, args, "float32", batch_size)
        mismatches = sum(parity["texts"][key] != text for key, text in zip(keys, seed_texts, strict=False))
    finally:
        if weed is not None:
            weed.stop()
    figures = {
        "device": torch.cuda.get_device_name()
        if device.type == "cuda"
        else f"cpu ({torch.get_num_threads()} threads, {platform.processor() or platform.machine()})",
        "dtype": dtype,
        "model": str(args.model) if args.model else f"standin-{args.standin}",
        "lines": len(files),
        "seed_lines": len(seed_files),
        "batch_size": batch_size,
        "max_new_tokens": args.max_new_tokens,
        "source": "seaweedfs" if args.from_s3 else "folder",
        "seed_loop_lines_per_s": round(seed_rate, 2),
        "hf_batched_lines_per_s": round(hf_rate, 2),
        "pisar_lines_per_s": round(pisar["lines_per_s"], 2),
        "speedup_vs_seed": round(pisar["lines_per_s"] / seed_rate, 2),
        "speedup_vs_hf": round(pisar["lines_per_s"] / hf_rate, 3),
        "input_wait_share": round(pisar["input_wait_share"], 4),
        "generate_share": round(pisar["generate_share"], 4),
        "peak_memory_mb": round(peak, 1),
        "gpu_seconds_per_1000_lines": round(1000 / pisar["lines_per_s"], 2) if device.type == "cuda" else None,
        "cpu_seconds_per_1000_lines": round(1000 / pisar["lines_per_s"], 2) if device.type == "cpu" else None,
        "parity_fp32": mismatches == 0,
        "parity_mismatches": mismatches,
        "engine": pisar["engine"],
        "fast_preprocessing": pisar["fast_preprocessing"],
        "sdpa_decoder_layers": pisar["sdpa_decoder_layers"],
        **{k: round(v, 1) for k, v in preprocessing_rate(model_dir, seed_files).items()},
        "versions": versions(),
        "date": time.strftime("%Y-%m-%d"),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(figures, indent=2))
    print(json.dumps(figures))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
