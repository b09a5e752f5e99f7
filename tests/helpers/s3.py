"""Objects put into the real SeaweedFS the tests start."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor


def upload(s3, bucket: str, items: dict[str, bytes]) -> None:  # boto3 client
    """Put every ``key: bytes`` of ``items`` into ``bucket``, 16 at a time."""
    with ThreadPoolExecutor(16) as pool:
        list(pool.map(lambda kv: s3.put_object(Bucket=bucket, Key=kv[0], Body=kv[1]), items.items()))
