"""Write the selected pairs as training-ready WebDataset shards plus ``manifest.parquet``.

Beside them, the counts a training script asks for: ``dataset_info.json`` (samples, shards, samples per shard,
the members each sample has, a brace pattern of the shards, the samples as Hugging Face ``datasets`` features),
the same JSON in the manifest's Parquet key-value metadata (``caption_assets.dataset_info``), and ``sizes.json``
({shard: samples}, the file open_clip's training script reads when ``--train-num-samples`` is not given).

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
DATASET_INFO = "dataset_info.json"
INFO_METADATA_KEY = "caption_assets.dataset_info"
SCORE_FIELDS = ("alt_clip", "synthetic_clip", "fused_clip", "final_clip", "final_reward", "selection")


def _hf_value(dtype: str) -> dict:
    return {"dtype": dtype, "_type": "Value"}


_STR, _F64, _I64 = _hf_value("string"), _hf_value("float64"), _hf_value("int64")
# Each sample's key.json, as Hugging Face `datasets` Features (its Features.to_dict form): given to load_dataset,
# it spares the inference from the first 5 samples, which fails on a field null there (a fallback's fused_caption)
# and drops images whose extension the first 5 did not show.
META_FEATURES = {
    "uid": _STR, "alt_text": _STR, "synthetic_caption": _STR, "fused_caption": _STR, "final_caption": _STR, "final_source": _STR,
    "scores": {k: _F64 for k in SCORE_FIELDS}, "alignment_level": _I64, "cluster": _I64,
    "lineage": {"source_shard": _STR, "source_key": _STR, "run_id": _STR},
}


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
                        "scores": dict(zip(SCORE_FIELDS, (r["clip_score"], r["synthetic_score"], r["fused_score"], r["final_score"],
                                                          r["final_reward_score"], r["selection_score"]))),
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
        info = dataset_info(man, samples_per_shard, run_id, veclip)
        man.write_parquet(tmp / "manifest.parquet", metadata={INFO_METADATA_KEY: json.dumps(info, sort_keys=True)})
        (tmp / DATASET_INFO).write_text(json.dumps(info, indent=2, sort_keys=True) + "\n")
        (tmp / "sizes.json").write_text(json.dumps(info["shard_samples"], indent=2) + "\n")
        old = out_dir.with_name(f".{out_dir.name}.old-{uuid.uuid4().hex[:8]}")
        if out_dir.exists():
            out_dir.rename(old)
        tmp.rename(out_dir)
        shutil.rmtree(old, ignore_errors=True)
        return man
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def dataset_info(manifest: pl.DataFrame, samples_per_shard: int, run_id: str, veclip: bool) -> dict:
    """What a training script needs to know about an export without opening its shards (shards are numbered from 0)."""
    per_shard = dict(manifest.group_by("shard").len().sort("shard").iter_rows())
    last = len(per_shard) - 1
    return {
        "format": "webdataset",
        "num_samples": manifest.height,
        "num_shards": len(per_shard),
        "samples_per_shard": samples_per_shard,
        "shard_samples": per_shard,
        # brace notation (open_clip's --train-data, webdataset), relative to this folder
        "train_data": None if last < 0 else f"shard-{{00000..{last:05d}}}.tar" if last else "shard-00000.tar",
        "members": {"image": sorted(manifest["image_ext"].unique().to_list()), "caption": "txt", "alt_text": "alt.txt" if veclip else None, "metadata": "json"},
        "run_id": run_id,
        "hf_features": hf_features(manifest["image_ext"].unique().sort().to_list(), veclip),
    }


def hf_features(image_exts: list[str], veclip: bool) -> dict:
    """Every member of a sample as Hugging Face `datasets` Features (``Features.from_dict`` reads it); one image column per format."""
    members = {ext: {"_type": "Image"} for ext in image_exts}
    return {**members, "txt": _STR, **({"alt.txt": _STR} if veclip else {}), "json": META_FEATURES, "__key__": _STR, "__url__": _STR}
