"""Lines read the way a Pisar worker reads them, for the benchmarks: one engine, the shard runner's pipeline."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any


def report(figures: dict[str, Any], out: Path | None = None) -> None:
    """Print a benchmark's figures as one JSON line, and keep an indented copy in ``out``."""
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(figures, indent=2))
    print(json.dumps(figures))


def seaweed_bucket(objects: dict[str, bytes], workdir: Path, prefix: str = "", **settings: Any) -> tuple[Any, Any]:
    """``objects`` (key -> bytes) uploaded to bucket ``bench`` of a throwaway SeaweedFS, and an
    ``S3Storage`` over ``prefix`` in it; returns (storage, the server to stop). The server's
    credentials go into this process's environment, as a worker reads them."""
    import os
    import sys

    from bench_paths import REPO

    sys.path.insert(0, str(REPO))
    from infra.local_services import start_seaweedfs
    from pisar.s3_storage import S3Storage
    from pisar.settings import Settings

    weed = start_seaweedfs(workdir / "weed")
    os.environ.update(weed.env)
    client = weed.s3_client()
    client.create_bucket(Bucket="bench")
    for key, data in objects.items():
        client.put_object(Bucket="bench", Key=key, Body=data)
    return S3Storage("bench", prefix, Settings(s3_endpoint_url=weed.url, **settings)), weed


def synchronize(device: Any) -> None:
    """Wait for queued GPU work, so a timer stops when the work is done."""
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize()


class PisarRow:
    """The worker's own path (``worker/batches.py: read_lines``, then ``worker/rows.py``), on a reader loaded the worker's way."""

    def __init__(
        self,
        model_dir: Path,
        storage: Any,
        dtype: str,
        batch_size: int | None,
        device: str,
        fetch_threads: int,
        generation: dict[str, Any],
        length_groups: int = 8,
        encoder_fp8: bool | None = None,
    ) -> None:
        from concurrent.futures import ThreadPoolExecutor
        from dataclasses import replace

        from pisar.images import ImageLimits
        from pisar.model_ref import ModelRef
        from pisar.reader import DecodeOptions, GenerationOptions, LineReader
        from pisar.settings import Settings

        settings = Settings(batch_size=batch_size, fetch_threads=fetch_threads, device=device, dtype=dtype, length_groups=length_groups)
        self.settings = settings
        options = DecodeOptions.from_settings(settings)  # PISAR_DECODE_GRAPHS and the encoder variants, as a worker reads them
        if encoder_fp8 is not None:
            options = replace(options, encoder_fp8=encoder_fp8)
        self.engine = LineReader(ModelRef(str(model_dir), None), device=device, dtype=dtype, options=options)
        self.pool = ThreadPoolExecutor(max_workers=settings.fetch_threads, thread_name_prefix="pisar-fetch")
        self.limits = ImageLimits.from_settings(settings)
        self.storage = storage
        self.generation = GenerationOptions.from_overrides(generation)
        self.texts: dict[str, str | None] = {}
        self.load_s = self.generate_s = 0.0

    @property
    def batch_size(self) -> int:
        """Lines per generate call as the worker picks it: the setting, or sized from free GPU memory."""
        s = self.settings
        return self.engine.batch_size(self.generation, s.batch_size, s.max_batch_size, s.batch_memory_share)

    def run(self, keys: list[str], layout: str = "lines", crop: str = "polygon") -> float:
        """Seconds to read ``keys`` (``layout="xml"``: page lines, cut from their scans); texts and the
        input-wait and generate seconds accumulate."""
        from pisar.sources import Cutting, line_source
        from pisar.worker.batches import read_lines
        from pisar.worker.rows import shard_rows

        synchronize(self.engine.backend.device)
        started = time.perf_counter()
        cutting = Cutting(self.limits, crop, self.settings.baseline_height)
        prepare = line_source(layout).preparer(self.storage, keys, self.engine.prepare, cutting)
        read = read_lines(keys, prepare, self.engine, self.generation, self.settings, self.pool)
        results = shard_rows(read.lines, "bench", "bench-model")
        load_s, generate_s = read.input_wait, read.generate
        synchronize(self.engine.backend.device)
        elapsed = time.perf_counter() - started
        errors = [r for r in results if r.status != "ok"]
        if errors:
            raise SystemExit(f"bench: {len(errors)} lines failed in the engine, first: {errors[0].error_class}: {errors[0].error}")
        self.texts.update({r.key: r.text for r in results})
        self.load_s += load_s
        self.generate_s += generate_s
        return elapsed

    def close(self) -> None:
        self.pool.shutdown(wait=True, cancel_futures=True)
