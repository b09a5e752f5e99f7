"""The catalog: tables, connections and bulk writes shared by producer and worker."""

from pisar.catalog.models import Campaign, Line, LineStatus, Shard, ShardState, utcnow

__all__ = ["Campaign", "Line", "LineStatus", "Shard", "ShardState", "utcnow"]
