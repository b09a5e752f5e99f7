"""Pisar: bulk transcription of scanned text-line images with encoder-decoder OCR models."""

__version__ = "0.1.0"
