"""``recaptioned_pairs``: candidate synthetic captions per kept pair, reranked by CLIP score."""

import numpy as np
import polars as pl
from dagster import AssetsDefinition, AutomationCondition, AssetExecutionContext, MaterializeResult, MetadataValue, asset

from caption_assets.consensus import choose
from caption_assets.degeneration import distinct_ngram_ratio, is_degenerate
from caption_assets.ingest import POINTER_COLUMNS, unreadable_rows
from caption_assets.metadata import describe, md_table, preview, table_schema
from caption_assets.partitions import shards_partitions
from caption_assets.placement import model_step
from caption_assets.settings import Settings
from resources import Captioner, ClipScorer, LakeStorage, QualityWarehouse

STAGE = "recaptioned_pairs"


def rerank(image_emb: np.ndarray, candidates: list[list[str]], clip: ClipScorer, selection: str = "clip") -> tuple[list[list[float]], np.ndarray, np.ndarray]:
    """Score every candidate against its image (CLIP-reward / self-retrieval selection).

    Returns per-row candidate scores, the index of the chosen candidate and its text embedding: the best-scored
    one, or with ``selection="consensus"`` the one the other candidates agree with most (``caption_assets.consensus``).
    Empty and degenerate candidates (``caption_assets.degeneration``) score -inf, so they are never
    chosen over a real one; a row whose candidates are all rejected gets no synthetic caption.
    """
    if not candidates:
        return [], np.zeros(0, dtype=np.int64), np.zeros((0, image_emb.shape[1]), np.float32)
    flat = [c for cs in candidates for c in cs]
    text = clip.encode_texts(flat).astype(np.float16).astype(np.float32)
    owner = np.repeat(np.arange(len(candidates)), [len(cs) for cs in candidates])
    img = image_emb.astype(np.float32)
    scores = (img[owner] * text).sum(axis=1)
    scores[np.array([not c.strip() or is_degenerate(c) for c in flat], dtype=bool)] = -np.inf
    per_row = np.split(scores, np.cumsum([len(cs) for cs in candidates])[:-1])
    best = np.array([choose(s, cs, selection) for s, cs in zip(per_row, candidates)], dtype=np.int64)
    starts = np.concatenate([[0], np.cumsum([len(cs) for cs in candidates])[:-1]]).astype(np.int64)
    best_emb = text[starts + best] if len(flat) else np.zeros((0, img.shape[1]), np.float32)
    return [s.tolist() for s in per_row], best, best_emb


def build_recaptioned_pairs(settings: Settings) -> AssetsDefinition:
    """The captioner and the CLIP rerank: a model step, placed by caption_assets/placement.py."""
    return asset(
        partitions_def=shards_partitions,
        automation_condition=AutomationCondition.eager(),
        deps=["scored_pairs"],
        group_name="captioning",
        kinds={"pytorch", "parquet"},
        owners=["team:ml"],
        tags={"stage": "captioning", "scope": "shard"},
        code_version="recaptioned_pairs-v2",
        description=(
            "For every kept pair: synthetic caption candidates from the Captioner (greedy / beam / diverse beam "
            "search / nucleus sampling), each scored against the stored image embedding with the ClipScorer; the "
            "best one becomes synthetic_caption (RECAP / BLIP CapFilt-style best-of-N)."
        ),
        **model_step(settings),
    )(recaptioned_pairs)


def recaptioned_pairs(
    context: AssetExecutionContext, captioner: Captioner, clip: ClipScorer, lake: LakeStorage, warehouse: QualityWarehouse
) -> MaterializeResult:
    shard = context.partition_key
    kept = lake.read("scored_pairs", shard).filter(pl.col("keep"))
    candidates, ok = captioner.caption_images(kept.select(POINTER_COLUMNS).rows())
    image_emb = kept["image_emb"].to_numpy() if kept.height else np.zeros((0, clip.embed_dim), np.float16)
    good = kept.filter(pl.Series(ok, dtype=pl.Boolean)) if kept.height else kept
    candidates = [c for c, o in zip(candidates, ok) if o]
    scores, best, best_emb = rerank(image_emb[ok] if kept.height else image_emb, candidates, clip, captioner.selection)
    dim = image_emb.shape[1]
    usable = [bool(np.isfinite(s[b])) for s, b in zip(scores, best)]
    synthetic = [cs[b] if u else None for cs, b, u in zip(candidates, best, usable)]
    rejected = sum(1 for cs, ss in zip(candidates, scores) for c, sc in zip(cs, ss) if c.strip() and sc == -np.inf)  # rerank's verdict
    out = good.select("uid", "key", "shard", *POINTER_COLUMNS, "caption", "clip_score").with_columns(
        candidates=pl.Series(candidates, dtype=pl.List(pl.String)),
        candidate_scores=pl.Series(scores, dtype=pl.List(pl.Float32)),
        synthetic_caption=pl.Series(synthetic, dtype=pl.String),
        synthetic_score=pl.Series([s[b] if u else None for s, b, u in zip(scores, best, usable)], dtype=pl.Float32),
        synthetic_emb=pl.Series(best_emb.astype(np.float16), dtype=pl.Array(pl.Float16, dim)),
        decoding=pl.lit(captioner.decoding),
        captioner=pl.lit(captioner.model_id()),
    )
    bad = kept.filter(~pl.Series(ok, dtype=pl.Boolean)) if kept.height else kept
    quarantine = unreadable_rows(bad, STAGE)
    path = lake.write_parquet(out, STAGE, shard)
    qpath = lake.write_parquet(quarantine, STAGE + "_quarantine", shard)
    diversity = [distinct_ngram_ratio(c, 2) for c in candidates]
    gains = [s[b] - s[0] for s, b in zip(scores, best) if np.isfinite(s[0]) and np.isfinite(s[b])]
    stats = [("candidate_distinct_2gram_ratio", float(np.mean(diversity)) if diversity else 0.0), ("best_of_n_gain", float(np.mean(gains)) if gains else 0.0),
             ("degenerate_candidates", float(rejected))]
    funnel = [("in", None, kept.height), ("kept", None, out.height)] + ([("quarantined", "image_unreadable", bad.height)] if bad.height else [])
    warehouse.replace_partition(STAGE, shard, funnel, qpath, context.run.run_id, stats)
    return MaterializeResult(
        metadata={
            "dagster/row_count": out.height,
            "dagster/column_schema": table_schema(dict(out.schema)),
            "decoding": captioner.decoding,
            "candidate_selection": captioner.selection,
            "captioner": captioner.model_id(),
            "candidates_per_pair": captioner.num_candidates,
            "degenerate_candidates_rejected": rejected,
            "pairs_without_synthetic_caption": usable.count(False),
            "candidate_diversity_distinct_2gram": stats[0][1],
            "best_of_n_score_gain_over_first": stats[1][1],
            "synthetic_caption_words": md_table(describe(out.with_columns(w=pl.col("synthetic_caption").str.count_matches(r"\S+")), {"words": "w"})),
            "examples": md_table(out.select("key", "caption", "synthetic_caption").head(5)),
            "preview_candidates": preview(out.with_columns(decision=pl.lit(captioner.decoding)), "decision", ["key", "candidates", "candidate_scores", "synthetic_caption"], per_group=3),
            "path": MetadataValue.path(str(path)),
        }
    )
