"""The GPU side: the Celery task, the image pipeline and the inference engine (``pisar.worker``)."""
