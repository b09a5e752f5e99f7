"""The reader library: line images in, typed readings out, whatever runs the model.

``LineReader`` (``line_reader.py``) is the one object the worker uses; ``Reading``,
``Provenance`` and ``ReadBatch`` (``reading.py``) what it returns; ``GenerationOptions``
(``options.py``) what a campaign asks of it. Back-ends are one module each (``backends.py``:
``torch_backend.py`` today). No catalog, Celery or storage here; torch only in the modules the
torch back-end loads, never on import of this package.
"""

from pisar.reader.backends import Backend, register_backend
from pisar.reader.line_reader import LineReader, ReaderCache
from pisar.reader.options import DecodeOptions, GenerationOptions
from pisar.reader.reading import DecodeSteps, LineOutcome, Provenance, ReadBatch, Reading

__all__ = [
    "Backend",
    "DecodeOptions",
    "DecodeSteps",
    "GenerationOptions",
    "LineOutcome",
    "LineReader",
    "Provenance",
    "ReadBatch",
    "Reading",
    "ReaderCache",
    "register_backend",
]
