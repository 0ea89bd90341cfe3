"""MIMIC-IV trajectory builder: read API (open a version, get a patient, iterate)."""
__version__ = "0.1.0"

from .use.store import Patient, Version, open_version  # noqa: E402

__all__ = ["Patient", "Version", "open_version", "__version__"]
