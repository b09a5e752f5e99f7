"""Test hook, loaded only by worker processes a test starts with this folder on PYTHONPATH.

It stands in for a native crash in an image decoder (a segfault in libpng, the OOM killer): when
the worker decodes a file whose bytes contain ``MARKER``, the process kills itself with SIGSEGV.
No Python exception, no cleanup: exactly what Celery and the catalog see when C code dies.
"""

import os
import signal

MARKER = b"PISAR-TEST-NATIVE-CRASH"


def _install() -> None:
    from pisar.worker import fetch

    decode = fetch.decode_line_image

    def crashing_decode(data: bytes, limits):  # noqa: ANN001, ANN202 - same signature as the real one
        if MARKER in data:
            os.kill(os.getpid(), signal.SIGSEGV)
        return decode(data, limits)

    fetch.decode_line_image = crashing_decode


if os.environ.get("PISAR_TEST_CRASH_HOOK") == "1":
    _install()
