"""Turn one shard into ``raw_pairs`` rows and quarantine rows (pure: no Dagster here).

Every record the reader yields lands in exactly one of the two tables, so
``seen == len(pairs) + len(quarantine)`` by construction, and the asset check verifies it
against an independent listing of the shard.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import polars as pl

from caption_assets.heuristics import HeuristicConfig, add_flags
from caption_assets.images import DEFAULT_MAX_PIXELS, BadImage, inspect_image
from caption_assets.readers import Record, iter_records
from caption_assets.text import DEFAULT_MAX_CAPTION_CHARS, BadCaption, decode_caption, normalise_caption, storable

RAW_PAIRS_SCHEMA = {
    "uid": pl.String,
    "key": pl.String,
    "shard": pl.String,
    "container": pl.String,
    "image_path": pl.String,
    "image_member": pl.String,
    "image_offset": pl.Int64,
    "image_length": pl.Int64,
    "sha256": pl.String,
    "phash": pl.Int64,
    "width": pl.Int32,
    "height": pl.Int32,
    "format": pl.String,
    "num_bytes": pl.Int64,
    "caption": pl.String,
    "caption_raw": pl.String,
    "url": pl.String,
    "meta_json": pl.String,
}
# The duplicate index's verdict: exact (bytes) or copy (verified by alignment: scale, shift as a share of the
# side, overlap, score < 1), the first candidate in the stable order and how many earlier candidates it had.
DUPLICATE_COLUMNS = {
    "duplicate_of": pl.String, "duplicate_kind": pl.String, "phash_distance": pl.Int64,
    "copy_scale": pl.Float64, "copy_dx": pl.Float64, "copy_dy": pl.Float64, "copy_overlap": pl.Float64, "copy_score": pl.Float64,
    "copy_candidates": pl.Int64, "candidate_of": pl.String,
}
POINTER_COLUMNS = ["container", "image_path", "image_member", "image_offset", "image_length"]
QUARANTINE_SCHEMA = {
    "shard": pl.String,
    "stage": pl.String,
    "key": pl.String,
    "member": pl.String,
    "reason": pl.String,
    "message": pl.String,
}


@dataclass(frozen=True)
class IngestLimits:
    max_pixels: int = DEFAULT_MAX_PIXELS
    max_caption_chars: int = DEFAULT_MAX_CAPTION_CHARS
    workers: int = 0  # decode threads; 0 = min(4, cores)


@dataclass
class IngestResult:
    pairs: pl.DataFrame
    quarantine: pl.DataFrame
    seen: int


IN_FLIGHT = 64  # records read ahead of the decoders: bounds memory to a few MB of image bytes


def uid_for(shard: str, key: str) -> str:
    return f"{shard}::{key}"


# A quarantine row has no key when the failure is not a sample's (a cut or unreadable shard, a sidecar
# that does not read, an unsafe member name): its uid names the member instead, ``<shard>::@<member>``.
# Every reader of quarantine rows (gallery, trace, stage truth) derives uids with this one expression.
QUARANTINE_UID_SQL = "shard || '::' || coalesce(key, '@' || coalesce(member, shard))"


def quarantine_uid() -> pl.Expr:
    """``QUARANTINE_UID_SQL`` as a polars expression."""
    return pl.concat_str(pl.col("shard"), pl.lit("::"), pl.coalesce(pl.col("key"), pl.lit("@") + pl.coalesce(pl.col("member"), pl.col("shard"))))


def _examine(rec: Record, shard: str, limits: IngestLimits) -> tuple | BadCaption | BadImage:
    """One record -> a raw_pairs row tuple, or the reason it is quarantined. Thread-safe."""
    if rec.problem is not None:
        return BadImage(*rec.problem)
    assert rec.key is not None and rec.ref is not None and rec.image is not None
    if storable(rec.key) != rec.key:
        return BadCaption("key_not_utf8", f"key {storable(rec.key)!r} is not UTF-8 text")
    try:
        caption_raw = decode_caption(rec.caption, limits.max_caption_chars)
        caption = normalise_caption(caption_raw)
        if not caption:
            raise BadCaption("empty_caption", "caption is empty after removing markup")
        info = inspect_image(rec.image, limits.max_pixels)
    except (BadCaption, BadImage) as bad:
        return bad
    return (
        uid_for(shard, rec.key), rec.key, shard, rec.ref.container, rec.ref.path, rec.ref.member,
        rec.ref.offset, rec.ref.length, info.sha256, info.phash, info.width, info.height, info.format,
        info.num_bytes, caption, caption_raw, storable(rec.url),
        json.dumps({str(k): v for k, v in rec.meta.items()}, sort_keys=True, default=str) if rec.meta else None,
        info.thumb,
    )


def ingest_shard(
    path: Path,
    shard: str,
    heuristics: HeuristicConfig = HeuristicConfig(),
    limits: IngestLimits = IngestLimits(),
    duplicates: Callable[[pl.DataFrame], pl.DataFrame] | None = None,
) -> IngestResult:
    """Stream the shard through a small thread pool (Pillow releases the GIL while decoding).

    ``duplicates`` maps the shard's pairs (uid, sha256, phash, thumb in row order) to one verdict per row
    (``DUPLICATE_COLUMNS``): the global duplicate index's lookup. Without it, only duplicates inside
    the shard are flagged.
    """
    cols: dict[str, list] = {name: [] for name in RAW_PAIRS_SCHEMA}
    thumbs: list[bytes | None] = []  # copy detection's thumbnails: for the index, not stored in raw_pairs
    quarantine: dict[str, list] = {name: [] for name in QUARANTINE_SCHEMA}
    seen = 0
    workers = limits.workers or min(4, os.cpu_count() or 1)
    in_flight: deque[tuple[Record, Future]] = deque()

    def collect(rec: Record, fut: Future) -> None:
        out = fut.result()
        if isinstance(out, tuple):
            for name, value in zip(RAW_PAIRS_SCHEMA, out):
                cols[name].append(value)
            thumbs.append(out[-1])
        else:
            for name, value in zip(QUARANTINE_SCHEMA, (shard, "raw_pairs", storable(rec.key), storable(rec.member), out.reason, storable(out.message))):
                quarantine[name].append(value)

    # the main thread reads the shard while the pool decodes what it read before; results stay in shard order
    with ThreadPoolExecutor(workers) as pool:
        for rec in iter_records(path):
            seen += 1
            in_flight.append((rec, pool.submit(_examine, rec, shard, limits)))
            if len(in_flight) >= IN_FLIGHT:
                collect(*in_flight.popleft())
        while in_flight:
            collect(*in_flight.popleft())

    pairs = pl.DataFrame(cols, schema=RAW_PAIRS_SCHEMA).with_columns(
        caption_words=pl.col("caption").str.count_matches(r"\S+").cast(pl.Int32),
        caption_chars=pl.col("caption").str.len_chars().cast(pl.Int32),
    )
    if duplicates is not None:
        query = pairs.select("uid", "sha256", "phash").with_columns(thumb=pl.Series(thumbs, dtype=pl.Binary))
        verdicts = duplicates(query)
        verdicts = verdicts.with_columns([pl.lit(None, dtype=t).alias(c) for c, t in DUPLICATE_COLUMNS.items() if c not in verdicts.columns])
        pairs = pl.concat([pairs, verdicts.select(list(DUPLICATE_COLUMNS)).cast(DUPLICATE_COLUMNS)], how="horizontal")  # type: ignore[arg-type]
    else:
        pairs = pairs.with_columns([pl.lit(None, dtype=t).alias(c) for c, t in DUPLICATE_COLUMNS.items()])
    pairs = add_flags(pairs, heuristics)
    return IngestResult(pairs, pl.DataFrame(quarantine, schema=QUARANTINE_SCHEMA), seen)


def unreadable_rows(bad: pl.DataFrame, stage: str) -> pl.DataFrame:
    """Quarantine rows, at a later stage, for pairs whose image no longer decodes from its pointer."""
    return pl.DataFrame(
        {"shard": bad["shard"], "stage": stage, "key": bad["key"], "member": bad["image_member"], "reason": "image_unreadable",
         "message": "image no longer decodes from its shard pointer"},
        schema=QUARANTINE_SCHEMA,
    )
