"""Error classes, sorted by what happens next.

- ``PisarError`` and subclasses: shown to an operator as one line, exit non-zero.
- an outage (``is_outage``: ``TransientError``, an unreachable or timed-out catalog): the shard is
  released without spending an attempt and retried later.
- ``FatalError``: this node cannot serve (model or device init): the shard is given back and the
  worker stops taking work and exits with ``FatalError.exit_code``.
- ``LineError`` and subclasses: one line image is bad; recorded on that line, the shard goes on.
- anything else in a shard's run is the shard's own failure: recorded, retried, then quarantined.
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


class Incomplete(PisarError):
    """A run ended with lines that have no final record (their shards quarantined): its output is not whole."""

    exit_code = 4


class TransientError(Exception):
    """A shard failed for a reason that may pass (network, storage, database)."""


class FatalError(PisarError):
    """This node cannot serve (model load, device): it gives its shard back and stops taking work."""

    exit_code = 3


def is_outage(exc: BaseException) -> bool:
    """True for a failure that passes by itself: storage or catalog unreachable, a connection lost, a timeout.

    Decided by type (and SQLite's result code), never by a message: ``TransientError`` (the object
    store); on Postgres the driver's ``OperationalError`` and ``InterfaceError`` (connection refused
    or reset, a statement or idle timeout, the server shutting down, a deadlock or serialization
    conflict); on SQLite a busy or locked database; SQLAlchemy's pool timeouts and invalidated
    connections; the OS's connection and timeout errors. A ``DataError``, ``IntegrityError`` or
    ``ProgrammingError`` is the shard's own: it would fail the same way again.
    """
    import sqlite3

    import psycopg
    import psycopg.errors
    from sqlalchemy import exc as sa

    if isinstance(exc, sa.DBAPIError):
        if exc.connection_invalidated:
            return True
        exc = exc.orig
    if isinstance(exc, sqlite3.Error):
        return getattr(exc, "sqlite_errorcode", 0) & 0xFF in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED)
    return isinstance(
        exc,
        TransientError
        | psycopg.OperationalError
        | psycopg.InterfaceError
        | psycopg.errors.IdleInTransactionSessionTimeout  # SQLSTATE 25P03: the server ended a stalled transaction
        | sa.TimeoutError
        | sa.DisconnectionError
        | ConnectionError
        | TimeoutError,
    )


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


class UnreadableLayout(LineError):
    """A page's PAGE or ALTO file does not parse, is too large, or is neither format; its lines cannot be found."""


class NoGeometry(LineError):
    """A page's TextLine has neither a polygon nor a baseline, or an empty one: nothing to cut from the scan."""


class NoLineId(LineError):
    """A page's TextLine has no id, so its text could not be written back to it."""


class DuplicateLineId(LineError):
    """A page's TextLine repeats the id of an earlier one, so the two could not be told apart in the file."""


class LineNotInLayout(LineError):
    """A page line's id is no longer in its PAGE or ALTO file: the file changed after it was listed."""


class WorkerCrash(LineError):
    """The worker process died (a native crash, the OOM killer) while reading this line, twice.

    Found by running a shard that lost its worker one line at a time; the line is set aside so the
    rest of its shard can finish, and it is not retried by ``lines_to_do`` (it would crash again).
    """


def line_error_classes() -> tuple[str, ...]:
    """Every ``error_class`` a line can be recorded with (``LineError``'s subclasses, here and in any
    module that defines one), sorted: what `retry --errors` accepts."""
    found: set[str] = set()
    todo = [LineError]
    while todo:
        cls = todo.pop()
        for sub in cls.__subclasses__():
            found.add(sub.__name__)
            todo.append(sub)
    return tuple(sorted(found))
