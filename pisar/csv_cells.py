"""CSV cells a spreadsheet will not run: OWASP's rule for CSV injection, and its exact inverse.

A key or a read text is data from outside (an archive's object names, what a model read). In a CSV
a person opens in Excel or LibreOffice, a cell starting with ``=``, ``+``, ``-``, ``@``, a tab or a
carriage return is taken as a formula (``=HYPERLINK(...)`` leaks data, ``=cmd|...`` runs programs).
Such a cell is written with a leading ``'``, which spreadsheets read as "text" and show without.
A cell that itself starts with ``'`` gets one more, so ``restore`` undoes ``neutralise`` exactly
and ``pisar review-import`` reads every key back as it was.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

FORMULA_START = frozenset("=+-@\t\r")
QUOTE = "'"


def neutralise(value: Any) -> Any:
    """A text cell that a spreadsheet would run, made inert with a leading ``'``; anything else as it is."""
    if isinstance(value, str) and value and (value[0] in FORMULA_START or value[0] == QUOTE):
        return QUOTE + value
    return value


def restore(value: str) -> str:
    """The text ``neutralise`` was given: one leading ``'`` taken off where ``neutralise`` put it."""
    if len(value) > 1 and value[0] == QUOTE and (value[1] in FORMULA_START or value[1] == QUOTE):
        return value[1:]
    return value


def neutralise_row(row: Mapping[str, Any]) -> dict[str, Any]:
    """Every cell of a ``csv.DictWriter`` row through ``neutralise``."""
    return {name: neutralise(value) for name, value in row.items()}
