"""The official ALTO 4.4 and PAGE 2019-07-15 schemas, shipped in ``pisar/schemas``, and a check against them.

Every layout file an export writes is checked before it is kept, so an archive never receives a
file its own tools would refuse without being told (``producer/layout_repairs.py`` says what was
mended and what could not be). Loading both schemas takes a few milliseconds; each check, about
one per page.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from lxml import etree

SCHEMA_DIR = Path(__file__).with_name("schemas")
SCHEMA_FILES = {"alto": "alto-4-4.xsd", "page": "pagecontent-2019-07-15.xsd"}


@lru_cache(maxsize=2)
def schema(fmt: str) -> etree.XMLSchema:
    """The official schema of ``fmt`` (``alto`` or ``page``); ALTO's XLink import is the local copy."""
    return etree.XMLSchema(etree.parse(str(SCHEMA_DIR / SCHEMA_FILES[fmt])))


def first_problem(document: etree._Element, fmt: str) -> str | None:
    """Why ``document`` is not valid ``fmt``, in one line (the schema's first complaint); ``None`` when it is."""
    checker = schema(fmt)
    if checker.validate(document):
        return None
    errors = checker.error_log.filter_from_errors()
    error = errors[0] if errors else checker.error_log.last_error
    return f"line {error.line}: {error.message}" if error is not None else "not valid"
