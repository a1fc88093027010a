"""``scored_pairs``: CLIP embeddings and scores, reward score, alignment level and keep decision per pair."""

import numpy as np
import polars as pl
from dagster import AssetKey, AssetsDefinition, AutomationCondition, TableColumnDep, TableColumnLineage, AssetExecutionContext, Config, Failure, MaterializeResult, MetadataValue, asset

from caption_assets.assets.reward_model import head_path
from caption_assets.assets.alignment_levels import cosine, current_levels
from caption_assets.config_defaults import with_defaults
from caption_assets.heuristics import DEFAULT_DROP_FLAGS
from caption_assets.ingest import POINTER_COLUMNS, unreadable_rows
from caption_assets.metadata import counts_by, md_histogram, md_table, preview, table_schema
from caption_assets.partitions import shards_partitions
from caption_assets.placement import model_step
from caption_assets.scoring import KeepRules, assign_levels, keep_decisions, levels_version
from caption_assets.settings import Settings
from resources import ClipScorer, LakeStorage, QualityWarehouse

STAGE = "scored_pairs"
QUARANTINE = "scored_pairs_quarantine"
CARRIED = ["uid", "key", "shard", *POINTER_COLUMNS, "sha256", "phash", "width", "height", "caption", "url", "flags", "primary_flag"]


class ScoredPairsConfig(Config):
    """Keep rules. ``level_boundaries`` overrides the global ``alignment_levels`` edges (for experiments).

    These defaults are fallbacks: the asset's config takes the settings' ``scoring:`` values (``build_scored_pairs``).
    """

    level_boundaries: list[float] | None = None
    drop_flags: list[str] = list(DEFAULT_DROP_FLAGS)
    min_clip_score: float | None = None
    drop_clip_quantile: float = 0.2
    min_reward_score: float | None = None


def score_pairs(raw: pl.DataFrame, clip: ClipScorer, head_file=None) -> tuple[pl.DataFrame, pl.DataFrame, str | None]:
    """Embed and score every raw pair; images that no longer decode become quarantine rows."""
    image, text, ok = clip.encode_pairs(raw.select(POINTER_COLUMNS).rows(), raw["caption"].to_list())
    image16, text16 = image.astype(np.float16), text.astype(np.float16)
    # Score from the stored (float16) embeddings, so clip_score is exactly their cosine downstream too.
    img32, txt32 = image16.astype(np.float32), text16.astype(np.float32)
    clip_score = cosine(img32, txt32)
    reward, version = None, None
    if head_file is not None and head_file.exists():
        from caption_assets.reward import load_head, score_with_head  # torch: in the step only

        head, version = load_head(head_file)
        reward = score_with_head(head, img32, txt32)
    dim = image.shape[1]
    scored = raw.select(CARRIED).with_columns(
        image_emb=pl.Series(image16, dtype=pl.Array(pl.Float16, dim)),
        text_emb=pl.Series(text16, dtype=pl.Array(pl.Float16, dim)),
        clip_score=pl.Series(clip_score.astype(np.float32)),
        reward_score=pl.Series(reward.astype(np.float32)) if reward is not None else pl.lit(None, dtype=pl.Float32),
    )
    mask = pl.Series(ok)
    return scored.filter(mask), unreadable_rows(scored.filter(~mask), STAGE), version


def level_edges(config: ScoredPairsConfig, lake: LakeStorage, clip: ClipScorer) -> tuple[list[float], str]:
    """(boundaries, version): the config's override, else the global ``alignment_levels`` in use."""
    if config.level_boundaries is not None:
        return list(config.level_boundaries), levels_version(config.level_boundaries, "run-config")
    levels = current_levels(lake)
    if levels is None:
        raise Failure("no alignment_levels yet: materialize `alignment_levels` once after the first shards are ingested (`caption-assets run` does)")
    if levels["scorer"] != clip.model_id():
        raise Failure(f"alignment_levels {levels['version']} were computed with {levels['scorer']}, not {clip.model_id()}: re-materialize alignment_levels")
    return list(levels["boundaries"]), str(levels["version"])


def build_scored_pairs(settings: Settings) -> AssetsDefinition:
    """CLIP and the reward head over every pair: a model step, placed by caption_assets/placement.py; keep-rule
    defaults from the settings' ``scoring:`` section."""
    config_class = with_defaults(ScoredPairsConfig, settings.scoring, f"profile {settings.profile!r}: scoring")

    def scored_pairs(
        context: AssetExecutionContext, config: config_class, clip: ClipScorer, lake: LakeStorage, warehouse: QualityWarehouse  # type: ignore[valid-type]
    ) -> MaterializeResult:
        return score_shard(context, config, clip, lake, warehouse)

    return asset(
        partitions_def=shards_partitions,
        automation_condition=AutomationCondition.eager(),
        deps=["raw_pairs", "alignment_reward_model", "alignment_levels"],
        group_name="scoring",
        kinds={"pytorch", "parquet"},
        owners=["team:ml"],
        tags={"stage": "scoring", "scope": "shard"},
        code_version="scored_pairs-v1",
        description=(
            "open_clip image/text embeddings (float16, reused downstream), clip_score (cosine), reward_score from the "
            "alignment reward model when one exists, NoC-style alignment_level (the global alignment_levels edges), and a keep "
            "decision with its reason (heuristic flags, CLIP threshold, reward threshold)."
        ),
        **model_step(settings),
    )(scored_pairs)


def score_shard(
    context: AssetExecutionContext, config: ScoredPairsConfig, clip: ClipScorer, lake: LakeStorage, warehouse: QualityWarehouse
) -> MaterializeResult:
    shard = context.partition_key
    bounds, levels = level_edges(config, lake, clip)
    raw = lake.read("raw_pairs", shard)
    scored, quarantine, reward_version = score_pairs(raw, clip, head_path(lake))
    scores = scored["clip_score"].to_numpy()
    scored = scored.with_columns(alignment_level=pl.Series(assign_levels(scores, bounds)))
    rules = KeepRules(tuple(config.drop_flags), config.min_clip_score, config.drop_clip_quantile, config.min_reward_score)
    scored, floor = keep_decisions(scored, rules)

    out = lake.write_parquet(scored, STAGE, shard)
    qpath = lake.write_parquet(quarantine, QUARANTINE, shard)
    dropped = counts_by(scored.filter(~pl.col("keep")), "drop_reason")
    funnel = [("in", None, raw.height), ("kept", None, int(scored["keep"].sum()))]
    funnel += [("filtered", r, n) for r, n in dropped.iter_rows()]
    funnel += [("quarantined", r, n) for r, n in counts_by(quarantine, "reason").iter_rows()]
    stats = [("clip_score_mean", float(scores.mean()) if len(scores) else float("nan"))]
    stats += [(f"level_boundary_{i}", b) for i, b in enumerate(bounds)]
    if floor is not None:
        stats.append(("clip_floor", floor))
    warehouse.replace_partition(STAGE, shard, funnel, qpath, context.run.run_id, stats, versions={"alignment_levels": levels})
    return MaterializeResult(
        metadata={
            "dagster/row_count": scored.height,
            "dagster/column_schema": table_schema(dict(scored.schema)),
            "dagster/column_lineage": TableColumnLineage(
                deps_by_column={c: [TableColumnDep(AssetKey("raw_pairs"), c)] for c in ("uid", "caption", "sha256", "phash", "flags")}
                | {"text_emb": [TableColumnDep(AssetKey("raw_pairs"), "caption")], "image_emb": [TableColumnDep(AssetKey("raw_pairs"), "image_path")]}
            ),
            "kept": int(scored["keep"].sum()),
            "dropped_by_reason": md_table(dropped),
            "quarantined": quarantine.height,
            "clip_score_histogram": md_histogram(scores, label="clip_score"),
            "reward_score_histogram": md_histogram(scored["reward_score"].drop_nulls().to_numpy(), label="reward_score"),
            "alignment_level_boundaries": MetadataValue.json(bounds),
            "alignment_levels_version": levels,
            "alignment_level_counts": md_table(counts_by(scored, "alignment_level").sort("alignment_level")),
            "preview_dropped": preview(scored.filter(~pl.col("keep")), "drop_reason", ["key", "caption", "clip_score", "alignment_level"]),
            "clip_floor": floor if floor is not None else "none",
            "clip_model": clip.model_id(),
            "reward_model_version": reward_version or "none",
            "path": MetadataValue.path(str(out)),
        }
    )
