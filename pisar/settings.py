"""One typed settings object, read from ``PISAR_*`` environment variables or ``.env``.

S3 credentials and region are deliberately *not* here: boto3 reads them the usual way
(``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``, ``AWS_DEFAULT_REGION``, profiles, roles).
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, ValidationError, ValidationInfo, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from pisar.constants import DEFAULT_QUEUE
from pisar.errors import ConfigError
from pisar.secrets import check_url, redact_url


class Settings(BaseSettings):
    """Every knob Pisar has. Unset services mean the embedded default (SQLite, in-process)."""

    # env_ignore_empty: compose passes every setting through as ``${PISAR_X:-}``; empty means the default.
    model_config = SettingsConfigDict(env_prefix="PISAR_", env_file=".env", extra="ignore", env_ignore_empty=True)

    # Services
    redis_url: str | None = Field(None, description="Celery broker; unset means embedded mode")
    database_url: str | None = Field(None, description="Catalog database (Postgres for distributed mode)")
    catalog_path: Path = Field(Path("pisar.db"), description="SQLite catalog file when database_url is unset")
    s3_endpoint_url: str | None = Field(None, description="S3-compatible endpoint (SeaweedFS, MinIO); unset = AWS")
    s3_addressing_style: Literal["auto", "path", "virtual"] = "path"
    s3_max_attempts: int = Field(8, ge=1, le=50, description="Attempts per S3 request (obstore's and botocore's retries)")
    s3_client: Literal["obstore", "boto3"] = Field(
        "obstore", description="obstore reads and lists off the GIL (boto3 still serves keys it cannot name); boto3 for everything"
    )
    queue: str = Field(DEFAULT_QUEUE, min_length=1, description="Celery queue that carries shards")

    flower_basic_auth: SecretStr | None = Field(
        None, description="`pisar flower` credentials, user:password[,user2:password2]; required unless --no-auth"
    )

    # Work division
    shard_size: int = Field(256, ge=1, le=100_000, description="Line images per shard")
    list_threads: int = Field(8, ge=1, le=256, description="Threads that list a source's key ranges (sub-folders) at once")
    lease_seconds: int = Field(
        60,
        ge=10,
        description="A claimed shard's lease; renewed every third of it while the worker lives (every 2 s while the catalog is "
        "unreachable), so a dead worker's shard is read again within about this long, its own message coming back when it ends",
    )
    outage_retry_seconds: int = Field(
        30, ge=1, description="Wait before a shard retries when the catalog or the object store is unreachable (not counted as an attempt)"
    )
    commit_timeout_seconds: int = Field(
        300,
        ge=1,
        description="Longest a shard's commit may take (Postgres statement and idle-in-transaction limits); "
        "past it the commit is an outage (released) and its lease is no longer renewed",
    )
    reap_interval_seconds: float = Field(30.0, gt=0, description="How often `pisar feed` looks for shards whose lease expired")
    queue_high_water: int = Field(
        1000, ge=1, description="Most shard messages waiting in Redis per queue and priority; the rest wait in the catalog as pending"
    )
    queue_low_water: int = Field(500, ge=0, description="`pisar feed` tops a queue up to the high-water mark once it holds fewer than this")
    feed_interval_seconds: float = Field(2.0, gt=0, description="How often `pisar feed` checks the queues' depth")
    visibility_timeout_seconds: int = Field(
        6 * 3600,
        ge=10,
        description="Redis redelivers an unacked shard after this; at least the lease. A redelivery of a shard still running is skipped",
    )
    max_attempts: int = Field(3, ge=1, le=100, description="Runs of a shard before it is quarantined")
    stop_timeout_seconds: int = Field(
        600,
        ge=10,
        description="A stopping worker's time (SIGTERM) to finish its running shard; shortly before it ends the shard is given back. "
        "Set the platform's grace period (compose stop_grace_period, Kubernetes terminationGracePeriodSeconds) to it",
    )

    # Metrics
    metrics_port: int = Field(9808, ge=0, le=65535, description="Port of a worker's Prometheus /metrics; 0 = off")
    metrics_bind: str = Field(
        "127.0.0.1", min_length=1, description="Address a worker's /metrics listens on: loopback unless set (0.0.0.0 in a container)"
    )

    # Inference
    model: str | None = Field(None, description="Model a worker preloads at start: DIR or HUB_ID@REVISION")
    device: Literal["auto", "cpu", "cuda"] = "auto"
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = Field(
        "auto", description="auto: bfloat16 on CUDA with bf16 support, float16 on older CUDA, float32 on CPU"
    )
    batch_size: int | None = Field(
        None, ge=1, le=4096, description="Lines per generate() call; unset = 16 on CPU, sized from free memory on CUDA"
    )
    max_batch_size: int = Field(512, ge=1, le=4096, description="Cap on the batch size chosen from free GPU memory")
    batch_memory_share: float = Field(0.85, gt=0, le=1, description="Share of free GPU memory a batch may fill")
    length_groups: int = Field(
        8,
        ge=1,
        le=64,
        description="Batches read ahead and regrouped by line width, so lines of similar length share a batch; 1 = key order",
    )
    torch_threads: int | None = Field(None, ge=1, description="torch intra-op threads (CPU); unset = torch default")
    max_new_tokens: int | None = Field(None, ge=1, le=4096, description="Override the model's generation config")
    num_beams: int = Field(1, ge=1, le=32, description="1 = greedy search")
    reader_backend: str = Field(
        "torch", description="What runs the model behind the line reader (pisar/reader/backends.py): torch, or a registered back-end"
    )
    decoder: Literal["auto", "generate"] = Field(
        "auto", description="auto: Pisar's greedy loop for TrOCR decoders where the settings allow, generate() otherwise; generate: always"
    )
    decode_graphs: Literal["auto", "on", "off"] = Field(
        "auto",
        description="Greedy loop steps of fixed shape, captured as one CUDA graph per batch bucket. auto: on CUDA; "
        "on: also on CPU (run uncaptured, for tests); off: the plain loop",
    )
    compile_encoder: bool = Field(False, description="torch.compile the encoder; off until bench/gpu.sh shows it pays")
    encoder_fp8: bool = Field(
        False,
        description="FP8 encoder linears through torchao (CUDA, compute capability 8.9+); off until a CER comparison on real lines allows it",
    )

    # Input pipeline
    fetch_threads: int = Field(16, ge=1, le=512, description="Threads that fetch, decode and preprocess images")
    prefetch_batches: int = Field(2, ge=1, le=64, description="Batches prepared ahead of the one on the GPU")
    max_image_pixels: int = Field(89_478_485, ge=1, description="Decompression-bomb limit (PIL's default)")
    min_image_side: int = Field(4, ge=1, description="Shorter images are recorded as ImageTooSmall")
    max_image_side: int = Field(16_384, ge=16, description="Longer images are recorded as ImageTooLarge")
    baseline_height: int = Field(
        60, ge=4, le=2000, description="Page lines with only a baseline: pixels of the box above it (a quarter of that below)"
    )

    # Line detection (``--layout detect``: page scans with no layout)
    detector: str = Field("blla", description="Line detector (pisar/detect): blla (kraken's baseline segmenter), or a module:Class path")
    detector_model: str | None = Field(
        None, description="The detector's model file; unset = its default (blla: the one in the kraken wheel)"
    )
    detect_pages_per_shard: int = Field(
        8,
        ge=1,
        le=1000,
        description="Scans whose detected lines make one read shard: it is read once its scans are detected, so fewer means "
        "reading starts sooner, more means larger batches on the GPU (a page holds about 30 lines)",
    )
    detect_polygon_workers: int = Field(
        0, ge=0, le=256, description="Processes that grow the polygons of a page's lines in parallel; 0 = one per CPU core"
    )
    detect_lines_ahead: int = Field(
        50_000,
        ge=1,
        description="Back-pressure: `pisar feed` sends no more scans to detect while this many detected lines wait to be read",
    )

    # IIIF sources (``pisar/iiif``): how Pisar treats the archive's servers, and which of ours it never asks
    iiif_allow_networks: str = Field(
        "",
        description="Networks (CIDR, comma-separated) a manifest may name although they are loopback, link-local or private; "
        "empty = public addresses only, so a manifest cannot make a worker fetch internal URLs",
    )
    iiif_host_connections: int = Field(4, ge=1, le=64, description="Requests at once to one IIIF host, per process")
    iiif_connect_timeout_seconds: float = Field(10.0, gt=0, description="Connecting to a IIIF server")
    iiif_read_timeout_seconds: float = Field(30.0, gt=0, description="Waiting for a IIIF server's next bytes")
    iiif_attempts: int = Field(4, ge=1, le=20, description="Tries per IIIF request on 429, 5xx and timeouts, with backoff")
    iiif_retry_after_max_seconds: float = Field(60.0, ge=0, description="Longest Retry-After a IIIF server is obeyed for")
    iiif_image_format: Literal["jpg", "png"] = Field(
        "jpg", description="The format images are asked in: jpg (every server), png (lossless, where the server offers it)"
    )
    iiif_max_manifest_bytes: int = Field(32 << 20, ge=1024, description="Largest manifest or collection read")
    iiif_max_image_bytes: int = Field(256 << 20, ge=1024, description="Largest image response read")
    iiif_max_collection_depth: int = Field(8, ge=0, le=100, description="Collections nested deeper than this are not walked")
    iiif_max_manifests: int = Field(100_000, ge=1, description="Most manifests and collections one source may name")

    @field_validator("queue_low_water")
    @classmethod
    def _below_high_water(cls, value: int, info: ValidationInfo) -> int:
        high = info.data.get("queue_high_water")
        if high is not None and value >= high:
            raise ValueError(f"must be below PISAR_QUEUE_HIGH_WATER ({high})")
        return value

    @field_validator("redis_url")
    @classmethod
    def _redis_scheme(cls, value: str | None) -> str | None:
        if not value:
            return None
        if not value.startswith(("redis://", "rediss://", "redis+socket://", "unix://")):
            raise ValueError("must start with redis:// or rediss://")
        return check_url(value)

    @field_validator("database_url")
    @classmethod
    def _database_scheme(cls, value: str | None) -> str | None:
        if not value:
            return None
        if value.startswith("postgres://"):
            value = "postgresql://" + value.removeprefix("postgres://")
        if value.startswith("postgresql://"):
            value = "postgresql+psycopg://" + value.removeprefix("postgresql://")
        if not value.startswith(("postgresql+psycopg://", "sqlite://")):
            raise ValueError("must be a postgresql:// or sqlite:// URL")
        return value if value.startswith("sqlite://") else check_url(value)

    @property
    def catalog_url(self) -> str:
        """The SQLAlchemy URL of the catalog: Postgres when configured, else the SQLite file."""
        return self.database_url or f"sqlite:///{self.catalog_path}"

    @property
    def distributed(self) -> bool:
        """True when a broker is configured, so shards go to Celery workers."""
        return self.redis_url is not None


def describe_validation_error(error: ValidationError) -> str:
    """One readable line naming the environment variable and the problem (passwords in URLs hidden)."""
    parts = []
    for item in error.errors():
        field = ".".join(str(p) for p in item["loc"]) or "settings"
        value = item.get("input")
        shown = repr(redact_url(value) if isinstance(value, str) else value) if "input" in item and not isinstance(value, dict) else ""
        parts.append(f"PISAR_{field.upper()}={shown}: {item['msg']}" if shown else f"PISAR_{field.upper()}: {item['msg']}")
    return "bad setting " + "; ".join(parts)


__all__ = ["Settings", "describe_validation_error", "get_settings", "redact_url"]


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings; a bad value raises ``ConfigError`` with one line."""
    try:
        return Settings()
    except ValidationError as exc:
        raise ConfigError(describe_validation_error(exc)) from None
