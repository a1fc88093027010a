"""``alignment_reward_model``: Compress & Align's human-like referee, trained on preference annotations."""

import numpy as np
import polars as pl
from dagster import AssetsDefinition, AssetExecutionContext, Config, DataVersion, MaterializeResult, MetadataValue, asset

from caption_assets.ingest import POINTER_COLUMNS
from caption_assets.metadata import md_table
from caption_assets.placement import model_step
from caption_assets.reward_version import REWARD_CODE_VERSION
from caption_assets.settings import Settings
from resources import AnnotationSource, ClipScorer, LakeStorage

ASSET = "alignment_reward_model"


class RewardConfig(Config):
    heldout_fraction: float = 0.2
    max_epochs: int = 400
    patience: int = 30
    learning_rate: float = 3e-3
    hidden: int = 256
    seed: int = 0


def head_path(lake: LakeStorage):
    return lake.asset_dir(ASSET) / "head.pt"


def build_alignment_reward_model(settings: Settings) -> AssetsDefinition:
    """The referee embeds with CLIP: a model step, placed by caption_assets/placement.py."""
    return asset(
        deps=["raw_pairs"],
        group_name="scoring",
        kinds={"pytorch"},
        owners=["team:ml"],
        tags={"stage": "scoring"},
        code_version=REWARD_CODE_VERSION,
        description=(
            "Compress & Align reward head on frozen CLIP embeddings, trained with a pairwise Bradley-Terry loss "
            "from human preference annotations (JSONL under data/annotations). Held-out split by image, early "
            "stopping. Versioned by code version + annotation/embedding hash; scored_pairs uses it when present."
        ),
        **model_step(settings),
    )(alignment_reward_model)


def alignment_reward_model(
    context: AssetExecutionContext, config: RewardConfig, clip: ClipScorer, lake: LakeStorage, annotations: AnnotationSource
) -> MaterializeResult:
    ann = annotations.read()
    files = lake.files("raw_pairs")
    keys = [r["image_key"] for r in ann.records]
    pointers = (
        pl.scan_parquet(files).filter(pl.col("uid").is_in(keys)).select("uid", *POINTER_COLUMNS).collect()
        if files and keys
        else pl.DataFrame()
    )
    by_uid = {row[0]: row[1:] for row in pointers.iter_rows()} if pointers.height else {}
    usable = [r for r in ann.records if r["image_key"] in by_uid]
    base_meta = {
        "annotation_records": len(ann.records),
        "matched_to_raw_pairs": len(usable),
        "rejected_lines": MetadataValue.json(ann.rejected),
        "annotations_folder": MetadataValue.path(annotations.folder),
    }
    path = head_path(lake)
    if len(usable) < 4:
        path.unlink(missing_ok=True)  # no stale referee may outlive its data
        context.log.warning(f"only {len(usable)} annotation records match raw_pairs; no reward model trained")
        return MaterializeResult(metadata={**base_meta, "trained": False}, data_version=DataVersion("untrained"))

    from caption_assets.reward import data_hash, expand_preferences, save_head, train_reward_head  # torch: in the step only

    image_emb, ok = clip.encode_images([by_uid[r["image_key"]] for r in usable])
    usable = [r for r, good in zip(usable, ok) if good]
    image_emb = image_emb[ok]
    flat = [c for r in usable for c in r["captions"]]
    text_emb = clip.encode_texts(flat)
    splits = np.cumsum([len(r["captions"]) for r in usable])[:-1]
    pairs = expand_preferences(image_emb, np.split(text_emb, splits), [r["preferred"] for r in usable])
    head, report = train_reward_head(
        pairs, config.heldout_fraction, config.max_epochs, config.patience, config.learning_rate, hidden=config.hidden, seed=config.seed
    )
    version = f"{REWARD_CODE_VERSION}-{data_hash(usable, clip.model_id())}"
    save_head(head, path, version, report)
    context.log.info(f"reward head {version}: held-out pairwise accuracy {report.heldout_accuracy:.3f}")
    return MaterializeResult(
        metadata={
            **base_meta,
            "trained": True,
            "version": version,
            "clip_model": clip.model_id(),
            "comparisons_train": report.n_train,
            "comparisons_heldout": report.n_heldout,
            "heldout_pairwise_accuracy": report.heldout_accuracy,
            "train_pairwise_accuracy": report.train_accuracy,
            "best_epoch": report.best_epoch,
            "epochs_run": report.epochs_run,
            "training_curve": md_table(pl.DataFrame(report.curve)),
            "path": MetadataValue.path(str(path)),
        },
        data_version=DataVersion(version),
    )
