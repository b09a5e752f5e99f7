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
      with batched generate (``read_lines`` in worker/batches.py).
Every row decodes the same number of tokens (min = max new tokens) with greedy search, so random
weights cannot stop early. Rows (b) and (c) alternate over ``--rounds`` slices of the lines, so a
shared machine's drifting speed hits both alike. Prints one JSON object (also written to ``--out``).
"""

from __future__ import annotations

import argparse
import platform
import resource
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench_paths import PRINT_LINES, REPO  # bench/ is on sys.path when a script here runs
from worker_path import PisarRow, report, seaweed_bucket, synchronize  # bench/ is on sys.path when a script here runs


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--standin", choices=["large", "small"], default="large", help="random-weight model of the reference shape")
    parser.add_argument("--model", type=Path, help="a real model folder instead of a stand-in")
    parser.add_argument("--lines", type=int, default=2048, help="line images for rows (b) and (c)")
    parser.add_argument("--seed-lines", type=int, default=64, help="line images for the slow row (a) and the fp32 parity check")
    parser.add_argument("--batch-size", type=int, default=0, help="row (b)'s lines per generate call (0: 64 on GPU, 16 on CPU)")
    parser.add_argument(
        "--pisar-batch-size", type=int, default=0, help="row (c)'s lines per generate call (0: the worker's choice, from free GPU memory)"
    )
    parser.add_argument("--max-new-tokens", type=int, default=40)
    parser.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    parser.add_argument("--length-groups", type=int, default=8, help="row (c)'s batches regrouped by line width (PISAR_LENGTH_GROUPS)")
    parser.add_argument(
        "--decoder-cache",
        choices=["dynamic", "static"],
        default="dynamic",
        help="row (c)'s KV cache (static: same texts; pays only with compile on GPU)",
    )
    parser.add_argument("--source", type=Path, default=PRINT_LINES, help="folder of line images")
    parser.add_argument("--from-s3", action="store_true", help="row (c) fetches from a throwaway SeaweedFS")
    parser.add_argument("--fetch-threads", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=4, help="rows (b) and (c) alternate over this many slices of the lines")
    parser.add_argument("--out", type=Path, default=REPO / "build" / "bench-engine.json")
    return parser.parse_args(argv)


def standin(kind: str, folder: Path) -> Path:
    """Build (once) the random-weight stand-in; its tokenizer is trained on the shared texts."""
    from pisar.random_model import build_random_model, read_texts

    target = folder / f"standin-{kind}"
    if not (target / "config.json").exists():
        build_random_model(target, read_texts([PRINT_LINES]), preset=f"bench-{kind}")
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


def fixed_length(tokens: int) -> dict[str, Any]:
    """Greedy generation of exactly ``tokens`` tokens, so random weights cannot stop early."""
    return {"max_new_tokens": tokens, "min_new_tokens": tokens, "num_beams": 1, "do_sample": False}


def generate_one(model: Any, processor: Any, images: list, tokens: int, device: Any, dtype: Any) -> list[str]:
    pixel_values = processor(images=images, return_tensors="pt").pixel_values.to(device, dtype)
    ids = model.generate(pixel_values, max_new_tokens=tokens, min_new_tokens=tokens, num_beams=1, do_sample=False)
    return processor.batch_decode(ids, skip_special_tokens=True)


class HFBatched:
    """Row (b): processor on a list of PIL images, generate on batches, half precision on GPU."""

    def __init__(self, model_dir: Path, tokens: int, device: Any, batch_size: int) -> None:
        import torch
        from transformers import VisionEncoderDecoderModel

        from pisar.model_ref import ModelRef
        from pisar.processor import load_processor

        self.dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
        self.processor = load_processor(ModelRef(str(model_dir), None), backend=None)  # transformers' default backend
        self.model = VisionEncoderDecoderModel.from_pretrained(model_dir, dtype=self.dtype).to(device).eval()
        self.tokens, self.device, self.batch_size = tokens, device, batch_size

    def run(self, files: list[Path]) -> float:
        """Seconds to read ``files``."""
        import torch
        from PIL import Image

        with torch.inference_mode():
            synchronize(self.device)
            started = time.perf_counter()
            for start in range(0, len(files), self.batch_size):
                images = [Image.open(p).convert("RGB") for p in files[start : start + self.batch_size]]
                generate_one(self.model, self.processor, images, self.tokens, self.device, self.dtype)
            synchronize(self.device)
            return time.perf_counter() - started


def interleaved(hf: HFBatched, pisar: PisarRow, files: list[Path], keys: list[str], rounds: int) -> tuple[float, float]:
    """Rows (b) and (c) over the same lines in alternating rounds, so drift in a shared machine's speed hits both alike."""
    hf.run(files[: hf.batch_size])  # warm-up: kernels, allocator, pools
    pisar.run(keys[: hf.batch_size])
    pisar.texts.clear()
    pisar.load_s = pisar.generate_s = 0.0
    hf_s = pisar_s = 0.0
    step = -(-len(files) // rounds)
    for number, start in enumerate(range(0, len(files), step)):
        chunk_files, chunk_keys = files[start : start + step], keys[start : start + step]
        if number % 2 == 0:
            hf_s += hf.run(chunk_files)
            pisar_s += pisar.run(chunk_keys)
        else:
            pisar_s += pisar.run(chunk_keys)
            hf_s += hf.run(chunk_files)
    return hf_s, pisar_s


def preprocessing_rate(model_dir: Path, files: list[Path]) -> dict[str, float]:
    """Lines per second per core: the processor vs Pisar's table preprocessor, on decoded lines."""
    from pisar.images import ImageLimits, decode_line
    from pisar.model_ref import ModelRef
    from pisar.processor import load_processor
    from pisar.reader.preprocess import LinePreprocessor

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
    from pisar.storage import LocalStorage

    if not args.from_s3:
        return LocalStorage(args.source), [p.name for p in files], None
    objects = {f"lines/{path.name}": path.read_bytes() for path in sorted(set(files))}
    storage, weed = seaweed_bucket(objects, workdir, "lines/", fetch_threads=args.fetch_threads)
    return storage, [f"lines/{p.name}" for p in files], weed


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    import torch

    from pisar.reader.devices import pick_device, pick_dtype

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
        hf = HFBatched(model_dir, args.max_new_tokens, device, batch_size)
        pisar_batch = args.pisar_batch_size or None
        generation = fixed_length(args.max_new_tokens) | ({"cache_implementation": "static"} if args.decoder_cache == "static" else {})
        pisar = PisarRow(
            model_dir, storage, dtype, pisar_batch, args.device, args.fetch_threads, generation, length_groups=args.length_groups
        )
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats()
        hf_s, pisar_s = interleaved(hf, pisar, files, keys, args.rounds)
        peak = peak_memory_mb(device)
        hf_rate, pisar_rate = len(files) / hf_s, len(files) / pisar_s
        texts = pisar.texts
        engine_info = {"engine": pisar.engine.describe(), "fast_preprocessing": pisar.engine.backend.fast_preprocess is not None}
        engine_info["pisar_batch_size"] = pisar.batch_size
        engine_info["sdpa_decoder_layers"] = pisar.engine.backend.sdpa_layers
        input_wait, generate_share = pisar.load_s / pisar_s, pisar.generate_s / pisar_s
        pisar.close()
        del hf, pisar
        if dtype != "float32":  # parity is an fp32 promise: read the seed lines again on an fp32 engine
            fp32 = PisarRow(model_dir, storage, "float32", batch_size, args.device, args.fetch_threads, fixed_length(args.max_new_tokens))
            fp32.run(keys[: len(seed_files)])
            texts = fp32.texts
            fp32.close()
        mismatches = sum(texts[key] != text for key, text in zip(keys, seed_texts, strict=False))
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
        "decoder_cache": args.decoder_cache,
        "source": "seaweedfs" if args.from_s3 else "folder",
        "seed_loop_lines_per_s": round(seed_rate, 2),
        "hf_batched_lines_per_s": round(hf_rate, 2),
        "pisar_lines_per_s": round(pisar_rate, 2),
        "speedup_vs_seed": round(pisar_rate / seed_rate, 2),
        "speedup_vs_hf": round(pisar_rate / hf_rate, 3),
        "rounds": args.rounds,
        "input_wait_share": round(input_wait, 4),
        "generate_share": round(generate_share, 4),
        "peak_memory_mb": round(peak, 1),
        "gpu_seconds_per_1000_lines": round(1000 / pisar_rate, 2) if device.type == "cuda" else None,
        "cpu_seconds_per_1000_lines": round(1000 / pisar_rate, 2) if device.type == "cpu" else None,
        "parity_fp32": mismatches == 0,
        "parity_mismatches": mismatches,
        **engine_info,
        **{k: round(v, 1) for k, v in preprocessing_rate(model_dir, seed_files).items()},
        "versions": versions(),
        "date": time.strftime("%Y-%m-%d"),
    }
    report(figures, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
