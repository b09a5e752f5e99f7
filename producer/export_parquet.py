"""Export records as Parquet: a fixed schema, written in row groups so memory stays flat at any campaign size."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import IO, Any

from pisar.constants import EXPORT_FIELDS

ROW_GROUP = 50_000

_TYPES = {
    "confidence": "float64",
    "min_token_prob": "float64",
    "token_count": "int32",
    "shard": "int32",
    "width": "int32",
    "height": "int32",
    "finished_at": "timestamp",
    "word_confidences": "float64 list",
    "reading_order": "int32",
}


def schema() -> Any:
    """The Parquet schema: one column per export field, typed (text fields as UTF-8 strings)."""
    import pyarrow as pa

    kinds = {
        "float64": pa.float64(),
        "float64 list": pa.list_(pa.float64()),
        "int32": pa.int32(),
        "timestamp": pa.timestamp("us", tz="UTC"),
    }
    return pa.schema([(name, kinds.get(_TYPES.get(name, ""), pa.string())) for name in EXPORT_FIELDS])


def write_parquet(records: Iterable[dict[str, Any]], handle: IO[bytes]) -> int:
    """Write ``records`` to ``handle`` in row groups of ``ROW_GROUP``; returns the count."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    table_schema = schema()
    count = 0
    columns: dict[str, list[Any]] = {name: [] for name in EXPORT_FIELDS}
    with pq.ParquetWriter(handle, table_schema, compression="zstd") as writer:

        def flush() -> None:
            writer.write_table(pa.table(columns, schema=table_schema))
            for values in columns.values():
                values.clear()

        for record in records:
            for name in EXPORT_FIELDS:
                value = record[name]
                columns[name].append(datetime.fromisoformat(value) if name == "finished_at" and value else value)
            count += 1
            if count % ROW_GROUP == 0:
                flush()
        if count % ROW_GROUP or count == 0:
            flush()
    return count
