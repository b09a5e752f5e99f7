"""Test hooks, loaded only by worker processes a test starts with this folder on PYTHONPATH.

Each goes through a documented seam where there is one:

- ``PISAR_TEST_CRASH_HOOK=1`` stands in for a native crash in an image decoder (a segfault in
  libpng, the OOM killer): when the worker decodes a file whose bytes contain ``MARKER`` (a line
  image or a page's scan: ``pisar.images.BEFORE_DECODE``), the process kills itself with SIGSEGV.
  No Python exception, no cleanup: exactly what Celery and the catalog see when C code dies.
- ``PISAR_TEST_SLOW_BATCH_SECONDS=S`` stands in for a slow accelerator: the ``torch`` back-end is
  registered again (``pisar.reader.register_backend``) as one whose every batch takes S seconds
  longer, so a test can hold a shard in its running state as long as it needs (for a kill at a
  chosen point, or a shard that outlives Redis's visibility timeout).
- ``PISAR_TEST_COMMIT_HANG_SECONDS=S`` (no seam serves: the write is patched) stands in for a client that stalls inside its commit (a
  paused VM, a frozen NFS mount, a GC pause): the process's first commit sleeps S seconds after
  writing its lines, inside the transaction, holding their locks.
- ``PISAR_TEST_KEEP_UNSTORABLE=1`` (patched too) turns off the replacement of characters no catalog can hold, so
  a NUL from the byte-level model reaches Postgres as it did before issue 17: a real ``DataError``.
"""

import os
import signal
import time

MARKER = b"PISAR-TEST-NATIVE-CRASH"


def _install_crash() -> None:
    from pisar.images import BEFORE_DECODE

    def crash_on_marker(data: bytes) -> None:
        if MARKER in data:
            os.kill(os.getpid(), signal.SIGSEGV)

    BEFORE_DECODE.append(crash_on_marker)


def _install_slow_batches(seconds: float) -> None:
    from pisar.reader import register_backend

    def slow_torch(*args, **kwargs):  # a back-end factory: the torch back-end, every batch slower
        from pisar.reader.torch_backend import TorchBackend

        class SlowTorch(TorchBackend):
            def read(self, *args, **kwargs):  # same signature as the real one
                time.sleep(seconds)
                return super().read(*args, **kwargs)

        return SlowTorch(*args, **kwargs)

    register_backend("torch", slow_torch)


def _install_commit_hang(seconds: float) -> None:
    from pisar.catalog import shards

    write = shards.upsert_line_results
    hung = []

    def hanging_write(*args, **kwargs):  # same signature as the real one
        write(*args, **kwargs)
        if not hung:
            hung.append(True)
            time.sleep(seconds)

    shards.upsert_line_results = hanging_write


def _keep_unstorable() -> None:
    from pisar.catalog.bulk import LineResult

    LineResult.storable = lambda self: self


if os.environ.get("PISAR_TEST_CRASH_HOOK") == "1":
    _install_crash()
if os.environ.get("PISAR_TEST_SLOW_BATCH_SECONDS"):
    _install_slow_batches(float(os.environ["PISAR_TEST_SLOW_BATCH_SECONDS"]))
if os.environ.get("PISAR_TEST_COMMIT_HANG_SECONDS"):
    _install_commit_hang(float(os.environ["PISAR_TEST_COMMIT_HANG_SECONDS"]))
if os.environ.get("PISAR_TEST_KEEP_UNSTORABLE") == "1":
    _keep_unstorable()
