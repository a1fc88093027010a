"""Find crawl shards in a folder and tell which reader each needs.

A shard is one file: a tar (WebDataset or img2dataset output), a parquet file (img2dataset output,
or a manifest pointing at image files), or a CSV/JSONL manifest. Its partition key is its path
relative to the crawl folder, so adding a file adds exactly one partition.
"""

from __future__ import annotations

from enum import Enum
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

SHARD_SUFFIXES = (".tar", ".parquet", ".csv", ".jsonl")
IMAGE_BYTES_COLUMNS = ("jpg", "png", "webp", "image", "image_bytes")
IMAGE_PATH_COLUMNS = ("image_path", "image", "path", "file", "filepath")
CAPTION_COLUMNS = ("caption", "text", "alt_text", "TEXT")


class ShardKind(str, Enum):
    TAR = "tar"  # WebDataset layout; img2dataset's tar output has the same layout
    IMG2DATASET_PARQUET = "img2dataset_parquet"
    MANIFEST = "manifest"


def discover_shards(crawl_dir: Path) -> list[str]:
    """Partition keys (relative posix paths) of every shard under ``crawl_dir``, sorted."""
    crawl_dir = Path(crawl_dir)
    if not crawl_dir.is_dir():
        return []
    keys = [
        p.relative_to(crawl_dir).as_posix()
        for p in crawl_dir.rglob("*")
        if p.is_file() and p.suffix.lower() in SHARD_SUFFIXES and not p.name.startswith((".", "_"))
    ]
    return sorted(keys)


def shard_kind(path: Path) -> ShardKind:
    suffix = path.suffix.lower()
    if suffix == ".tar":
        return ShardKind.TAR
    if suffix == ".parquet":
        try:
            schema = pq.read_schema(path)
        except Exception:  # noqa: BLE001 - the manifest reader quarantines an unreadable file with its reason
            return ShardKind.MANIFEST
        if any(c in IMAGE_BYTES_COLUMNS for c in binary_columns(schema)) or "status" in schema.names:
            return ShardKind.IMG2DATASET_PARQUET
    return ShardKind.MANIFEST


def binary_columns(schema: pa.Schema) -> list[str]:
    return [f.name for f in schema if pa.types.is_binary(f.type) or pa.types.is_large_binary(f.type)]
