"""Write the selected pairs as training-ready WebDataset shards plus ``manifest.parquet``.

Images are copied here, once, from their source shards. The folder is built under a temporary
name and swapped in by rename, so readers see either the old export or the new one, never a mix.
"""

from __future__ import annotations

import io
import json
import shutil
import tarfile
import uuid
from pathlib import Path

import polars as pl

from caption_assets.ingest import POINTER_COLUMNS
from caption_assets.readers import read_image_bytes

SIGNATURES = ((b"\xff\xd8\xff", "jpg"), (b"\x89PNG", "png"))


def image_ext(data: bytes) -> str:
    for sig, ext in SIGNATURES:
        if data.startswith(sig):
            return ext
    return "webp" if data[:4] == b"RIFF" and data[8:12] == b"WEBP" else "jpg"


def _add(tf: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mode, info.mtime = len(data), 0o644, 0
    tf.addfile(info, io.BytesIO(data))


def write_webdataset(selected: pl.DataFrame, out_dir: Path, samples_per_shard: int, run_id: str, veclip: bool) -> pl.DataFrame:
    """Write shards into ``out_dir`` (swapped in atomically); returns the manifest (one row per pair)."""
    out_dir = Path(out_dir)
    tmp = out_dir.with_name(f".{out_dir.name}.tmp-{uuid.uuid4().hex[:8]}")
    tmp.mkdir(parents=True)
    rows = selected.sort("uid").with_columns(key=pl.format("{}", pl.int_range(pl.len()).cast(pl.String).str.zfill(9)))
    manifest = []
    try:
        for s, start in enumerate(range(0, rows.height, samples_per_shard)):
            chunk = rows.slice(start, samples_per_shard)
            shard_name = f"shard-{s:05d}.tar"
            with tarfile.open(tmp / shard_name, "w", format=tarfile.USTAR_FORMAT) as tf:
                for r in chunk.iter_rows(named=True):
                    data = read_image_bytes(*(r[c] for c in POINTER_COLUMNS))
                    ext = image_ext(data)
                    meta = {
                        "uid": r["uid"], "alt_text": r["caption"], "synthetic_caption": r["synthetic_caption"],
                        "fused_caption": r["fused_caption"], "final_caption": r["final_caption"], "final_source": r["final_source"],
                        "scores": {"alt_clip": r["clip_score"], "synthetic_clip": r["synthetic_score"], "fused_clip": r["fused_score"],
                                   "final_clip": r["final_score"], "final_reward": r["final_reward_score"], "selection": r["selection_score"]},
                        "alignment_level": r["alignment_level"], "cluster": r["cluster"],
                        "lineage": {"source_shard": r["shard"], "source_key": r["key"], "run_id": run_id},
                    }
                    _add(tf, f"{r['key']}.{ext}", data)
                    _add(tf, f"{r['key']}.txt", r["final_caption"].encode())
                    if veclip:  # VeCLIP mixed training: alt-text beside the fused caption
                        _add(tf, f"{r['key']}.alt.txt", r["caption"].encode())
                    _add(tf, f"{r['key']}.json", json.dumps(meta, sort_keys=True, default=float).encode())
                    manifest.append({"key": r["key"], "shard": shard_name, "uid": r["uid"], "image_ext": ext, "image_bytes": len(data)})
        man = pl.DataFrame(manifest, schema={"key": pl.String, "shard": pl.String, "uid": pl.String, "image_ext": pl.String, "image_bytes": pl.Int64})
        man = man.join(rows.select("uid", pl.col("shard").alias("source_shard"), "final_caption", "final_source", "final_score", "final_reward_score", "cluster", "sha256"), on="uid", how="left")
        man.write_parquet(tmp / "manifest.parquet")
        old = out_dir.with_name(f".{out_dir.name}.old-{uuid.uuid4().hex[:8]}")
        if out_dir.exists():
            out_dir.rename(old)
        tmp.rename(out_dir)
        shutil.rmtree(old, ignore_errors=True)
        return man
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
