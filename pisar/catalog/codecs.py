"""How the catalog stores a line's typed values: flags and per-word confidences, one codec each.

Both are text columns. Flags are comma-separated, each once, in order (``max_length,empty``); a
line without flags stores NULL. Per-word confidences are space-separated with four decimals; a
reading with no words stores an empty string and a line that was not read NULL. Every write and
every query that looks inside either goes through here, so the stored form is decided in one place.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from sqlalchemy import ColumnElement, func, literal, or_


def encode_flags(flags: Iterable[str]) -> str | None:
    """The stored form: comma-separated, each once, in order; ``None`` for none."""
    kept = list(dict.fromkeys(str(f) for f in flags if f))
    return ",".join(kept) or None


def has_any_flag(column: ColumnElement[str], flags: Sequence[str]) -> ColumnElement[bool]:
    """SQL: the stored ``column`` holds one of ``flags`` (a whole name, never a part of one)."""
    padded = literal(",") + func.coalesce(column, "") + literal(",")
    return or_(*(padded.like(f"%,{flag},%") for flag in flags))


def has_flag_sql(column: str, parameter: str) -> str:
    """The same test in SQL text, for statements written as text: ``parameter`` bound to ``flag_pattern(flag)``."""
    return f"(',' || {column} || ',') LIKE :{parameter}"


def flag_pattern(flag: str) -> str:
    return f"%,{flag},%"


def encode_word_confidences(values: Sequence[float] | None) -> str | None:
    """The stored form: space-separated, four decimals; ``None`` stays ``None``."""
    if values is None:
        return None
    return " ".join(f"{value:.4f}" for value in values)


def decode_word_confidences(stored: str | None) -> list[float] | None:
    """The stored per-word confidences as numbers (``None`` where none were stored)."""
    if stored is None:
        return None
    return [float(value) for value in stored.split()]
