"""Deployment and local-development helpers (not installed with the package)."""
