"""Test hooks, loaded only by worker processes a test starts with this folder on PYTHONPATH.

- ``PISAR_TEST_CRASH_HOOK=1`` stands in for a native crash in an image decoder (a segfault in
  libpng, the OOM killer): when the worker decodes a file whose bytes contain ``MARKER``, the process
  kills itself with SIGSEGV. No Python exception, no cleanup: exactly what Celery and the catalog see
  when C code dies.
- ``PISAR_TEST_SLOW_BATCH_SECONDS=S`` stands in for a slow accelerator: every ``generate`` batch
  takes S seconds longer, so a test can hold a shard in its running state as long as it needs (for
  a kill at a chosen point, or a shard that outlives Redis's visibility timeout).
- ``PISAR_TEST_COMMIT_HANG_SECONDS=S`` stands in for a client that stalls inside its commit (a
  paused VM, a frozen NFS mount, a GC pause): the process's first commit sleeps S seconds after
  writing its lines, inside the transaction, holding their locks.
- ``PISAR_TEST_KEEP_UNSTORABLE=1`` turns off the replacement of characters no catalog can hold, so
  a NUL from the byte-level model reaches Postgres as it did before issue 17: a real ``DataError``.
"""

import os
import signal
import time

MARKER = b"PISAR-TEST-NATIVE-CRASH"


def _install_crash() -> None:
    from pisar.worker import fetch

    decode = fetch.decode_line

    def crashing_decode(data: bytes, limits):  # same signature as the real one
        if MARKER in data:
            os.kill(os.getpid(), signal.SIGSEGV)
        return decode(data, limits)

    fetch.decode_line = crashing_decode


def _install_slow_batches(seconds: float) -> None:
    from pisar.worker.engine import Engine

    recognize = Engine.recognize

    def slow_recognize(self, *args, **kwargs):  # same signature as the real one
        time.sleep(seconds)
        return recognize(self, *args, **kwargs)

    Engine.recognize = slow_recognize


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
