"""Dagster assets that turn web-crawled image/alt-text pairs into a compact, well-aligned caption dataset."""

__version__ = "0.1.0"
