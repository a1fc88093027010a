"""Where shards are read from and where per-partition outputs are written.

Outputs are written to a temporary name and renamed into place (``atomic_write_parquet``), so a crashed
run never leaves a half-written file for a downstream asset to read.
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import quote, unquote

import polars as pl
from dagster import ConfigurableResource

from caption_assets.atomic_io import atomic_write_parquet
from caption_assets.shards import discover_shards


class CrawlSource(ConfigurableResource):
    """The folder the crawl sensor watches; partition keys are shard paths relative to it."""

    crawl_dir: str

    def shard_path(self, partition_key: str) -> Path:
        path = (Path(self.crawl_dir) / partition_key).resolve()
        if Path(self.crawl_dir).resolve() not in path.parents:
            raise ValueError(f"partition key {partition_key!r} points outside the crawl folder")
        return path

    def list_shards(self) -> list[str]:
        return discover_shards(Path(self.crawl_dir))


class LakeStorage(ConfigurableResource):
    """Parquet outputs, one file per (asset, partition), under ``root``."""

    root: str

    def asset_dir(self, asset: str) -> Path:
        return Path(self.root) / asset

    def path(self, asset: str, partition: str | None = None, suffix: str = ".parquet") -> Path:
        name = quote(partition, safe="") + suffix if partition is not None else asset + suffix
        return self.asset_dir(asset) / name

    def write_parquet(self, df: pl.DataFrame, asset: str, partition: str | None = None) -> Path:
        target = self.path(asset, partition)
        atomic_write_parquet(df, target)
        return target

    def read(self, asset: str, partition: str | None = None) -> pl.DataFrame:
        return pl.read_parquet(self.path(asset, partition))

    def scan(self, asset: str, partition: str | None = None) -> pl.LazyFrame:
        return pl.scan_parquet(self.path(asset, partition))

    def files(self, asset: str) -> list[str]:
        """Paths of every materialized partition file of an asset, in partition order (for a scan or a read_parquet)."""
        return [str(p) for p in self.existing(asset).values()]

    def existing(self, asset: str) -> dict[str, Path]:
        """Materialized partitions of an asset: partition key -> file."""
        folder = self.asset_dir(asset)
        if not folder.is_dir():
            return {}
        return {unquote(p.name[: -len(".parquet")]): p for p in sorted(folder.glob("*.parquet"))}


class AnnotationSource(ConfigurableResource):
    """Folder of human-preference JSONL files (schema in caption_assets/annotations.py)."""

    folder: str

    def read(self):
        from caption_assets.annotations import read_annotations

        return read_annotations(Path(self.folder))
