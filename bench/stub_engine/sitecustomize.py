"""Benchmark hook, loaded only by worker processes `bench/pipeline.py` starts with this folder on PYTHONPATH.

``PISAR_BENCH_STUB_ENGINE=1`` replaces the model's ``generate`` with an instant answer: each line
reads ``stub line N``. Everything else is the real worker: Redis delivery, the claim, the lease,
S3 fetch, PIL decode, preprocessing, the catalog commit. What the pipeline then sustains is the
system's own ceiling, whatever the accelerator.
"""

import os
import threading


def _install_stub_engine() -> None:
    from pisar.worker.engine import Engine, Recognition

    counter = iter(range(1 << 62))
    lock = threading.Lock()

    def stub_recognize(self, pixel_values, generation=None):  # same signature as the real one
        with lock:
            numbers = [next(counter) for _ in range(len(pixel_values))]
        return [Recognition(text=f"stub line {n}", confidence=1.0, min_token_prob=1.0, token_count=3) for n in numbers]

    Engine.recognize = stub_recognize


if os.environ.get("PISAR_BENCH_STUB_ENGINE") == "1":
    _install_stub_engine()
