"""``vision_expert_tags``: FuseCap-style expert facts (OCR text, object tags) per kept pair."""

import numpy as np
import polars as pl
from dagster import AssetsDefinition, AutomationCondition, AssetExecutionContext, MaterializeResult, MetadataValue, asset

from caption_assets.ingest import POINTER_COLUMNS
from caption_assets.metadata import counts_by, md_table, table_schema
from caption_assets.partitions import shards_partitions
from caption_assets.placement import model_step
from caption_assets.settings import Settings
from resources import ClipScorer, LakeStorage, VisionExperts

STAGE = "vision_expert_tags"


def build_vision_expert_tags(settings: Settings) -> AssetsDefinition:
    """Zero-shot CLIP tags (and OCR): a model step, placed by caption_assets/placement.py."""
    return asset(
        partitions_def=shards_partitions,
        automation_condition=AutomationCondition.eager(),
        deps=["scored_pairs"],
        group_name="captioning",
        kinds={"pytorch", "parquet"},
        owners=["team:ml"],
        tags={"stage": "captioning", "scope": "shard"},
        code_version="vision_expert_tags-v1",
        description=(
            "Per kept pair: OCR text (Tesseract) and object tags (zero-shot CLIP over a tag vocabulary, reusing the "
            "stored image embeddings), each with confidences. Each expert can be switched off in VisionExperts."
        ),
        **model_step(settings),
    )(vision_expert_tags)


def vision_expert_tags(context: AssetExecutionContext, experts: VisionExperts, clip: ClipScorer, lake: LakeStorage) -> MaterializeResult:
    shard = context.partition_key
    kept = lake.read("scored_pairs", shard).filter(pl.col("keep"))
    ocr = experts.read_text(kept.select(POINTER_COLUMNS).rows())
    image_emb = kept["image_emb"].to_numpy() if kept.height else np.zeros((0, clip.embed_dim), np.float16)
    tag_emb = clip.encode_texts(experts.tag_prompts()) if experts.tags and kept.height else np.zeros((0, image_emb.shape[1]), np.float32)
    tags, tag_scores = experts.tag(image_emb, tag_emb)
    out = kept.select("uid", "key", "shard").with_columns(
        ocr_text=pl.Series([t for t, _ in ocr], dtype=pl.String),
        ocr_confidence=pl.Series([c for _, c in ocr], dtype=pl.Float32),
        tags=pl.Series(tags, dtype=pl.List(pl.String)),
        tag_scores=pl.Series(tag_scores, dtype=pl.List(pl.Float32)),
    )
    path = lake.write_parquet(out, STAGE, shard)
    tag_freq = counts_by(out.select(pl.col("tags").explode().alias("tag")).drop_nulls(), "tag").head(15)
    return MaterializeResult(
        metadata={
            "dagster/row_count": out.height,
            "dagster/column_schema": table_schema(dict(out.schema)),
            "ocr": experts.ocr_status(),
            "tags": "zero-shot CLIP" if experts.tags else "off",
            "pairs_with_ocr_text": out["ocr_text"].drop_nulls().len(),
            "pairs_with_tags": out.filter(pl.col("tags").list.len() > 0).height,
            "top_tags": md_table(tag_freq),
            "path": MetadataValue.path(str(path)),
        }
    )
