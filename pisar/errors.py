"""Error classes, sorted by what happens next.

- ``PisarError`` and subclasses: shown to an operator as one line, exit non-zero.
- ``TransientError``: a shard-level failure worth retrying with backoff (S3, DB, broker).
- ``FatalError``: the worker cannot serve at all (model or device init); it exits.
- ``LineError`` and subclasses: one line image is bad; recorded on that line, the shard goes on.
"""

from __future__ import annotations


class PisarError(Exception):
    """An error an operator can act on; the CLI prints ``pisar: error: <message>``."""

    exit_code = 1


class ConfigError(PisarError):
    """A setting or argument is invalid."""

    exit_code = 2


class ServiceUnavailable(PisarError):
    """Redis, Postgres or object storage cannot be reached."""


class NotFound(PisarError):
    """A campaign, model or source does not exist."""


class CatalogNotReady(PisarError):
    """The catalog schema is missing or older than this code."""


class TransientError(Exception):
    """A shard failed for a reason that may pass (network, storage, database)."""


class FatalError(Exception):
    """The worker process cannot work (model load, device); it should exit."""


class LineError(Exception):
    """One line image cannot be transcribed; ``error_class`` is stored on its row."""

    @property
    def error_class(self) -> str:
        return type(self).__name__


class MissingObject(LineError):
    """The key was listed but the object is gone."""


class FetchFailed(LineError):
    """Reading the object failed after storage-level retries."""


class EmptyFile(LineError):
    """The object has zero bytes."""


class NotAnImage(LineError):
    """PIL does not recognise the bytes as any image format."""


class TruncatedImage(LineError):
    """The image header is valid but the data ends early or is corrupt."""


class UnreadableImage(LineError):
    """Decoding or preprocessing raised something PIL does not classify further."""


class DecompressionBomb(LineError):
    """The image claims more pixels than the configured limit."""


class ImageTooSmall(LineError):
    """A side is shorter than ``min_image_side``: nothing legible fits."""


class ImageTooLarge(LineError):
    """A side is longer than ``max_image_side``: not a text line."""


class GenerationFailed(LineError):
    """The model raised on this line even when run alone."""


class WorkerCrash(LineError):
    """The worker process died (a native crash, the OOM killer) while reading this line, twice.

    Found by running a shard that lost its worker one line at a time; the line is set aside so the
    rest of its shard can finish, and it is not retried by ``lines_to_do`` (it would crash again).
    """
