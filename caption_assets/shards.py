"""Find crawl shards in a folder and tell which reader each needs.

A shard is a tar (WebDataset or img2dataset ``webdataset`` output), a parquet file (img2dataset
``parquet`` output, or a manifest pointing at image files), a CSV/JSONL manifest, or a folder of
``<key>.jpg/.txt/.json`` files (img2dataset ``files`` output). Its partition key is its path relative
to the crawl folder, so adding a shard adds exactly one partition.

img2dataset writes metadata beside each shard: ``00000.parquet`` (one row per url, with status and
error message) next to ``00000.tar`` or the folder ``00000/``, and ``00000_stats.json``. Those are
*sidecars* of the shard with the same stem, never shards of their own.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

SHARD_SUFFIXES = (".tar", ".parquet", ".csv", ".jsonl")
IMAGE_BYTES_COLUMNS = ("jpg", "png", "webp", "image", "image_bytes")
IMAGE_PATH_COLUMNS = ("image_path", "image", "path", "file", "filepath")
CAPTION_COLUMNS = ("caption", "text", "alt_text", "TEXT")
STATS_SUFFIX = "_stats.json"


class ShardKind(str, Enum):
    TAR = "tar"  # WebDataset layout; img2dataset's webdataset output has the same layout
    FOLDER = "folder"  # img2dataset's `files` output: <key>.jpg/.txt/.json in a folder per shard
    IMG2DATASET_PARQUET = "img2dataset_parquet"
    MANIFEST = "manifest"


@dataclass(frozen=True)
class Sidecars:
    """img2dataset's per-shard metadata files, where they exist."""

    parquet: Path | None
    stats: Path | None


def sidecars(path: Path) -> Sidecars:
    """The same-stem ``.parquet`` (for a tar or folder shard) and ``_stats.json`` beside a shard."""
    path = Path(path)
    stem = path.name if path.is_dir() else path.stem
    parquet = path.with_name(stem + ".parquet")
    stats = path.with_name(stem + STATS_SUFFIX)
    return Sidecars(
        parquet if path.suffix.lower() != ".parquet" and parquet.is_file() else None,
        stats if stats.is_file() else None,
    )


def read_stats(path: Path) -> dict[str, Any] | None:
    """img2dataset's ``_stats.json`` for a shard (count, successes, failures), or None if absent/unreadable."""
    stats = sidecars(path).stats
    if stats is None:
        return None
    try:
        data = json.loads(stats.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def discover_shards(crawl_dir: Path) -> list[str]:
    """Partition keys (relative posix paths) of every shard under ``crawl_dir``, sorted.

    One ``os.scandir`` pass per folder: a folder is itself a shard when img2dataset left a same-stem
    parquet or ``_stats.json`` beside it (and then it is not searched for more shards).
    """
    crawl_dir = Path(crawl_dir)
    if not crawl_dir.is_dir():
        return []
    keys: list[str] = []
    stack = [crawl_dir]
    while stack:
        folder = stack.pop()
        with os.scandir(folder) as it:
            entries = [e for e in it if not e.name.startswith((".", "_"))]
        files = {e.name for e in entries if e.is_file(follow_symlinks=False)}
        dirs = {e.name for e in entries if e.is_dir(follow_symlinks=False)}
        shard_dirs = {d for d in dirs if f"{d}.parquet" in files or f"{d}{STATS_SUFFIX}" in files}
        rel = folder.relative_to(crawl_dir)
        for name in files:
            stem, suffix = os.path.splitext(name)
            if suffix.lower() not in SHARD_SUFFIXES:
                continue
            if suffix.lower() == ".parquet" and (f"{stem}.tar" in files or stem in shard_dirs):
                continue  # img2dataset's sidecar of a tar or folder shard
            keys.append((rel / name).as_posix())
        keys.extend((rel / d).as_posix() for d in shard_dirs)
        stack.extend(folder / d for d in sorted(dirs - shard_dirs, reverse=True))
    return sorted(keys)


def shard_signature(path: Path) -> str:
    """What changes when a shard is rewritten: mtime and size of the shard and of its sidecar parquet."""
    parts = []
    for p in (path, sidecars(path).parquet):
        if p is not None:
            st = p.stat()
            parts.append(f"{st.st_mtime_ns}:{st.st_size}")
    return "+".join(parts)


def shard_kind(path: Path) -> ShardKind:
    if path.is_dir():
        return ShardKind.FOLDER
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
