"""The global duplicate index as a Dagster resource (the index itself is caption_assets.duplicate_index)."""

from __future__ import annotations

import polars as pl
from dagster import ConfigurableResource

from caption_assets.duplicate_index import ImageIndex, Update


class DuplicateIndex(ConfigurableResource):
    """SQLite file of every ingested image's sha256 and pHash bands; ``max_distance`` is the near-duplicate radius in bits."""

    path: str
    max_distance: int = 4

    def index(self) -> ImageIndex:
        return ImageIndex(self.path, self.max_distance)

    def update(self, shard: str, rows: pl.DataFrame) -> Update:
        return self.index().update(shard, rows)

    def stale_shards(self) -> dict[str, int]:
        return self.index().stale_shards()
