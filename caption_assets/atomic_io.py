"""Parquet written to a temporary name and renamed into place: a crashed writer never leaves a half-written
file under a name a reader opens (atomic on POSIX and on a shared file system)."""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import polars as pl


def atomic_write_parquet(df: pl.DataFrame, target: Path) -> Path:
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.{uuid.uuid4().hex}.tmp")
    try:
        df.write_parquet(tmp, compression="zstd", statistics=True)
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
    return target
