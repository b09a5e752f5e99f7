"""Names shared by the producer, the worker and Flower; one place so they never drift."""

TASK_RUN_SHARD = "pisar.run_shard"
TASK_DETECT_PAGE = "pisar.detect_page"
DETECT_QUEUE_SUFFIX = ".detect"  # a campaign's scans go to ``<its queue>.detect``: detect workers consume it
DEFAULT_QUEUE = "pisar"

#: Image suffixes that are line images; matched case-insensitively.
IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".tif", ".tiff", ".jp2", ".webp", ".bmp", ".gif"})

#: Fields of one exported record, in order: the stable contract of `pisar export`.
EXPORT_FIELDS = (
    "key",
    "status",
    "text",
    "confidence",
    "min_token_prob",
    "token_count",
    "error_class",
    "error",
    "note",
    "flags",
    "shard",
    "worker",
    "finished_at",
    "width",
    "height",
    "model",
    "word_confidences",  # one per word of the text (pisar.words); JSON/Parquet a list, CSV space-separated
    "page",  # a page campaign's line: the PAGE/ALTO file's key,
    "line_id",  # the TextLine's id,
    "region_id",  # its region's id,
    "image",  # the scan's key,
    "reading_order",  # and its 0-based place in the page's reading order; all None for line images
)

# How the error of a shard whose worker died starts (for people: the shard's ``suspect`` column is
# what makes its next run read one line at a time, ``pisar/catalog/shards.py``).
WORKER_LOST = "WorkerLost"

# Campaign priorities: 0 (lowest) to 9 (most urgent); see ``pisar.queue.message_priority``.
MAX_PRIORITY = 9
DEFAULT_PRIORITY = 5
