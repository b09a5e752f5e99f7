"""The GPU side: the Celery task, the shard runner and its input pipeline (``pisar.worker``); the model itself is read through ``pisar.reader``."""
