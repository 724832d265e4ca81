"""reidctl: offline inference and deployment toolkit for person re-identification models."""

__version__ = "0.1.0"
