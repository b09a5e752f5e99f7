"""Benchmark hook, loaded only by worker processes `bench/pipeline.py` starts with this folder on PYTHONPATH.

``PISAR_BENCH_STUB_ENGINE=1`` registers the ``torch`` back-end again (``pisar.reader.register_backend``)
as one whose batches are read at once: each line reads ``stub line N``. Everything else is the real worker: Redis delivery, the claim, the lease,
S3 fetch, PIL decode, preprocessing, the catalog commit. What the pipeline then sustains is the
system's own ceiling, whatever the accelerator.
"""

import os
import threading


def _install_stub_engine() -> None:
    from pisar.reader import Reading, register_backend

    counter = iter(range(1 << 62))
    lock = threading.Lock()

    def stub_torch(*args, **kwargs):  # a back-end factory: the model loaded and preprocessing real, the reading instant
        from pisar.reader.torch_backend import TorchBackend

        class StubTorch(TorchBackend):
            def read(self, pixel_values, options=None):  # same signature as the real one
                with lock:
                    numbers = [next(counter) for _ in range(len(pixel_values))]
                return [Reading(text=f"stub line {n}", confidence=1.0, min_token_prob=1.0, token_count=3) for n in numbers]

        return StubTorch(*args, **kwargs)

    register_backend("torch", stub_torch)


if os.environ.get("PISAR_BENCH_STUB_ENGINE") == "1":
    _install_stub_engine()
