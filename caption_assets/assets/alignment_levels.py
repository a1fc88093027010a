"""``alignment_levels``: one set of NoC-style level boundaries for every shard, computed once and versioned.

Per-shard quantiles made level 3 mean something different in each shard. The boundaries are now the
quantiles of the CLIP score over a stable reference sample drawn across all ingested shards, stored
as ``data/lake/alignment_levels/<version>.json`` (every version kept; ``current.json`` is the one in
use). The version is a content hash of the edges and the scorer, and it is this asset's data
version: re-materializing with a new CLIP or new shards that move the edges marks every
``scored_pairs`` partition stale in the UI and for the nightly backfill; the same edges change nothing.
"""


import json
from pathlib import Path

import numpy as np
import polars as pl
from dagster import AssetsDefinition, AssetExecutionContext, AutomationCondition, Config, DataVersion, Failure, MaterializeResult, MetadataValue, asset

from caption_assets.ingest import POINTER_COLUMNS
from caption_assets.metadata import md_histogram
from caption_assets.placement import model_step
from caption_assets.scoring import level_boundaries, levels_version, reference_sample
from caption_assets.settings import Settings
from resources import ClipScorer, LakeStorage

ASSET = "alignment_levels"


class AlignmentLevelsConfig(Config):
    n_levels: int = 4
    reference_size: int = 4096  # pairs across all shards: quantile edges to about +-0.01 of rank
    seed: int = 0


def current_levels(lake: LakeStorage) -> "dict | None":
    """The boundaries in use (``version``, ``boundaries``, ``scorer``, ...), or None before the first materialization."""
    path = lake.asset_dir(ASSET) / "current.json"
    return json.loads(path.read_text()) if path.exists() else None


def cosine(img: np.ndarray, txt: np.ndarray) -> np.ndarray:
    """Row-wise cosine of two embedding matrices."""
    return (img * txt).sum(axis=1) / (np.linalg.norm(img, axis=1) * np.linalg.norm(txt, axis=1) + 1e-12)


def pair_scores(image: np.ndarray, text: np.ndarray) -> np.ndarray:
    """CLIP cosine from float16-rounded embeddings: exactly what ``scored_pairs`` stores and scores."""
    return cosine(image.astype(np.float16).astype(np.float32), text.astype(np.float16).astype(np.float32))


def build_alignment_levels(settings: Settings) -> AssetsDefinition:
    """CLIP over the reference sample: a model step, placed by caption_assets/placement.py."""
    return asset(
        deps=["raw_pairs"],
        group_name="scoring",
        kinds={"pytorch", "json"},
        owners=["team:ml"],
        tags={"stage": "scoring"},
        code_version="alignment_levels-v1",
        automation_condition=AutomationCondition.on_missing(),
        description=(
            "Global alignment-level boundaries: CLIP-score quantiles over a stable reference sample of pairs from all "
            "shards. Versioned by content (edges + scorer); every scored_pairs partition uses them and records the version."
        ),
        **model_step(settings),
    )(alignment_levels)


def alignment_levels(context: AssetExecutionContext, config: AlignmentLevelsConfig, clip: ClipScorer, lake: LakeStorage) -> MaterializeResult:
    files = lake.files("raw_pairs")
    if not files:
        raise Failure("no raw_pairs partitions yet: ingest some shards before computing alignment levels")
    sample = reference_sample(pl.scan_parquet(files).select("uid", *POINTER_COLUMNS, "caption"), config.reference_size, config.seed)
    image, text, ok = clip.encode_pairs(sample.select(POINTER_COLUMNS).rows(), sample["caption"].to_list())
    scores = pair_scores(image, text)[ok]
    bounds = level_boundaries(scores, config.n_levels)
    version = levels_version(bounds, clip.model_id())
    record = {"version": version, "boundaries": bounds, "n_levels": config.n_levels, "scorer": clip.model_id(),
              "reference_pairs": int(ok.sum()), "reference_shards": len(files), "seed": config.seed}
    folder = lake.asset_dir(ASSET)
    folder.mkdir(parents=True, exist_ok=True)
    _write_json(folder / f"{version}.json", record)
    _write_json(folder / "current.json", record)
    context.log.info(f"alignment levels {version}: {bounds} from {record['reference_pairs']} pairs in {len(files)} shards")
    return MaterializeResult(
        metadata={
            "version": version,
            "boundaries": MetadataValue.json(bounds),
            "reference_pairs": record["reference_pairs"],
            "reference_shards": len(files),
            "scorer": clip.model_id(),
            "clip_score_histogram": md_histogram(scores, label="clip_score"),
            "path": MetadataValue.path(str(folder / f"{version}.json")),
        },
        data_version=DataVersion(version),
    )


def _write_json(path: Path, record: dict) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(record, indent=2))
    tmp.replace(path)
