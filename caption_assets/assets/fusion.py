"""``fused_captions``: LLM fusion of alt-text + synthetic caption + expert facts, behind guardrails."""

import numpy as np
import polars as pl
from dagster import AssetsDefinition, AssetKey, AutomationCondition, TableColumnDep, TableColumnLineage, AssetExecutionContext, Config, MaterializeResult, MetadataValue, RetryPolicy, asset

from caption_assets.assets.reward_model import head_path
from caption_assets.config_defaults import with_defaults
from caption_assets.degeneration import is_degenerate
from caption_assets.fusion import FusionInput, Guardrails, expert_facts, reject_reason, rule_fuse
from caption_assets.metadata import counts_by, describe, md_table, preview, table_schema
from caption_assets.partitions import shards_partitions
from caption_assets.placement import model_step
from caption_assets.settings import Settings
from resources import CaptionFuser, ClipScorer, LakeStorage, QualityWarehouse

STAGE = "fused_captions"
COLUMN_LINEAGE = TableColumnLineage(
    deps_by_column={
        "caption": [TableColumnDep(AssetKey("raw_pairs"), "caption")],
        "synthetic_caption": [TableColumnDep(AssetKey("recaptioned_pairs"), "synthetic_caption")],
        "fused_caption": [
            TableColumnDep(AssetKey("raw_pairs"), "caption"),
            TableColumnDep(AssetKey("recaptioned_pairs"), "synthetic_caption"),
            TableColumnDep(AssetKey("vision_expert_tags"), "tags"),
            TableColumnDep(AssetKey("vision_expert_tags"), "ocr_text"),
        ],
        "final_score": [TableColumnDep(AssetKey("scored_pairs"), "image_emb"), TableColumnDep(AssetKey("recaptioned_pairs"), "synthetic_score")],
        "image_emb": [TableColumnDep(AssetKey("scored_pairs"), "image_emb")],
    }
)


class FusionConfig(Config):
    min_words: int = 3
    max_words: int = 77
    # A fused caption may score this much below its best input and still replace it: room for the scorer's own
    # noise between equally true phrasings (the demo profile's value is tuned, scripts/tune_demo_decisions.py).
    score_margin: float = 0.02
    alt_max_words: int = 40  # the rule fuser only merges alt-texts up to this length


def fuse_shard(rec: pl.DataFrame, experts: pl.DataFrame | None, fuser: CaptionFuser, clip: ClipScorer, cfg: FusionConfig) -> pl.DataFrame:
    """Fuse, score and guard every pair; falls back to the best input caption with the reason."""
    if experts is not None:
        rec = rec.join(experts.select("uid", "tags", "ocr_text"), on="uid", how="left")
    else:
        rec = rec.with_columns(tags=pl.lit([], dtype=pl.List(pl.String)), ocr_text=pl.lit(None, dtype=pl.String))
    rows = rec.select("caption", "synthetic_caption", "tags", "ocr_text", "primary_flag").rows()
    items = [FusionInput(alt, syn or "", expert_facts(tags or [], ocr)) for alt, syn, tags, ocr, _ in rows]
    fused_llm = fuser.fuse(items)
    fused = [
        text if fuser.backend != "rules" else rule_fuse(it, flag is None and len(alt.split()) <= cfg.alt_max_words, tags or [], ocr)
        for (text, _), it, (alt, _, tags, ocr, flag) in zip(fused_llm, items, rows)
    ]
    image = rec["image_emb"].to_numpy().astype(np.float32) if rec.height else np.zeros((0, clip.embed_dim), np.float32)
    fused_emb = clip.encode_texts([f or "" for f in fused]).astype(np.float16).astype(np.float32)
    fused_score = (image * fused_emb).sum(axis=1)
    alt_score = rec["clip_score"].to_numpy()
    syn_score = rec["synthetic_score"].fill_nan(-np.inf).fill_null(-np.inf).to_numpy()
    guard = Guardrails(cfg.min_words, cfg.max_words, cfg.score_margin)
    reasons = []
    for f, (_, err), it, fs, a, s in zip(fused, fused_llm, items, fused_score, alt_score, syn_score):
        sources = [it.alt_text, it.synthetic_caption, it.expert_facts]
        reasons.append(err or reject_reason(f, sources, float(fs) if f else None, float(max(a, s)), guard))
    accepted = np.array([r is None for r in reasons])
    # The fallback is the better-scored input caption that is usable: a degenerate alt-text never wins.
    alt_bad = np.array([is_degenerate(it.alt_text) for it in items], dtype=bool)
    syn_wins = (syn_score > alt_score) | (alt_bad & np.isfinite(syn_score))
    source = np.where(accepted, "fused", np.where(syn_wins, "synthetic", "alt_text"))
    final_score = np.where(accepted, fused_score, np.maximum(alt_score, syn_score)).astype(np.float32)
    alt_emb = rec["text_emb"].to_numpy().astype(np.float32) if rec.height else fused_emb
    syn_emb = rec["synthetic_emb"].to_numpy().astype(np.float32) if rec.height else fused_emb
    final_emb = np.where(accepted[:, None], fused_emb, np.where(syn_wins[:, None], syn_emb, alt_emb))
    final_caption = [f if acc else (it.synthetic_caption if sw else it.alt_text) for f, acc, sw, it in zip(fused, accepted, syn_wins, items)]
    dim = image.shape[1]
    out = rec.drop("tags", "ocr_text").with_columns(
        fused_caption=pl.Series(fused, dtype=pl.String),
        fused_score=pl.Series(fused_score.astype(np.float32)),
        fusion_status=pl.Series(["accepted" if r is None else r for r in reasons], dtype=pl.String),
        final_caption=pl.Series(final_caption, dtype=pl.String),
        final_source=pl.Series(source.tolist(), dtype=pl.String),
        final_score=pl.Series(final_score),
        final_text_emb=pl.Series(final_emb.astype(np.float16), dtype=pl.Array(pl.Float16, dim)),
        fuser=pl.lit(fuser.model_id()),
    )
    return out


def build_fused_captions(settings: Settings) -> AssetsDefinition:
    """CLIP on the fused captions (and a local LLM with the transformers fuser): a model step, placed by
    caption_assets/placement.py; guardrail defaults from the settings' ``fusion:`` section."""
    config_class = with_defaults(FusionConfig, settings.fusion, f"profile {settings.profile!r}: fusion")

    def fused_captions(
        context: AssetExecutionContext, config: config_class, fuser: CaptionFuser, clip: ClipScorer, lake: LakeStorage, warehouse: QualityWarehouse  # type: ignore[valid-type]
    ) -> MaterializeResult:
        return materialize_fused_captions(context, config, fuser, clip, lake, warehouse)

    return asset(
        partitions_def=shards_partitions,
        automation_condition=AutomationCondition.eager(),
        deps=["recaptioned_pairs", "vision_expert_tags", "scored_pairs"],
        group_name="captioning",
        kinds={"parquet"},
        owners=["team:ml"],
        tags={"stage": "fusion", "scope": "shard"},
        code_version="fused_captions-v1",
        retry_policy=RetryPolicy(max_retries=2, delay=10),
        description=(
            "CapsFusion / VeCLIP / FuseCap fusion of alt-text, synthetic caption and expert facts by the CaptionFuser. "
            "A fused caption is accepted only if it is non-empty, within length bounds, no prompt echo or refusal, "
            "mentions no entity or number absent from its inputs, and scores >= best input - margin; otherwise the best "
            "input caption is kept, with the reason. Alt-text, synthetic and fused captions stay side by side."
        ),
        **model_step(settings),
    )(fused_captions)


def materialize_fused_captions(
    context: AssetExecutionContext, config: FusionConfig, fuser: CaptionFuser, clip: ClipScorer, lake: LakeStorage, warehouse: QualityWarehouse
) -> MaterializeResult:
    shard = context.partition_key
    rec = lake.read("recaptioned_pairs", shard).drop("clip_score")
    scored = lake.read("scored_pairs", shard).select("uid", "image_emb", "text_emb", "clip_score", "reward_score", "alignment_level", "sha256", "phash", "primary_flag")
    rec = rec.join(scored, on="uid", how="left")
    experts_path = lake.path("vision_expert_tags", shard)
    experts = pl.read_parquet(experts_path) if experts_path.exists() else None
    out = fuse_shard(rec, experts, fuser, clip, config)
    if head_path(lake).exists() and out.height:
        from caption_assets.reward import load_head, score_with_head  # torch: in the step only

        head, _ = load_head(head_path(lake))
        final_reward = score_with_head(head, out["image_emb"].to_numpy().astype(np.float32), out["final_text_emb"].to_numpy().astype(np.float32))
        out = out.with_columns(final_reward_score=pl.Series(final_reward.astype(np.float32)))
    else:
        out = out.with_columns(final_reward_score=pl.lit(None, dtype=pl.Float32))
    path = lake.write_parquet(out, STAGE, shard)
    status = counts_by(out, "fusion_status")
    wins = counts_by(out, "final_source")
    funnel = [("in", None, rec.height)] + [("fused" if s == "accepted" else "fallback", None if s == "accepted" else s, n) for s, n in status.iter_rows()]
    stats = [(f"source_{s}", float(n)) for s, n in wins.iter_rows()]
    warehouse.replace_partition(STAGE, shard, funnel, None, context.run.run_id, stats)
    lengths = out.with_columns(
        alt=pl.col("caption").str.count_matches(r"\S+"), synthetic=pl.col("synthetic_caption").str.count_matches(r"\S+"),
        fused=pl.col("fused_caption").fill_null("").str.count_matches(r"\S+"), final=pl.col("final_caption").str.count_matches(r"\S+"),
    )
    return MaterializeResult(
        metadata={
            "dagster/row_count": out.height,
            "dagster/column_schema": table_schema(dict(out.schema)),
            "dagster/column_lineage": COLUMN_LINEAGE,
            "fuser": fuser.model_id(),
            "acceptance_rate": float((out["fusion_status"] == "accepted").mean()) if out.height else 0.0,
            "fusion_status": md_table(status),
            "source_wins": md_table(wins),
            "caption_words": md_table(describe(lengths, {"alt-text": "alt", "synthetic": "synthetic", "fused": "fused", "final": "final"})),
            "examples": md_table(out.select("key", "caption", "synthetic_caption", "final_caption", "fusion_status").head(5)),
            "preview_rejected_fusions": preview(out.filter(pl.col("fusion_status") != "accepted"), "fusion_status", ["key", "fused_caption", "final_caption", "final_source"]),
            "path": MetadataValue.path(str(path)),
        }
    )
