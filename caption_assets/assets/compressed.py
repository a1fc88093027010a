"""``compressed_dataset``: dedup + codebook selection over every shard, exported as WebDataset shards."""

import io
import json
import tarfile
from pathlib import Path

import numpy as np
import polars as pl
from dagster import (
    AssetCheckResult,
    AssetCheckSeverity,
    AssetCheckSpec,
    AssetExecutionContext,
    AssetsDefinition,
    Config,
    Failure,
    MaterializeResult,
    MetadataValue,
    asset,
)
from PIL import Image

from caption_assets.placement import LIGHT_STEP_TAGS
from caption_assets.compress import Compression, CompressConfig, compress
from caption_assets.config_defaults import with_defaults
from caption_assets.degeneration import is_degenerate
from caption_assets.metadata import md_table
from caption_assets.report import before_after, evaluation_html, images_html, plots, render_html, table_html
from caption_assets.settings import Settings
from resources import LakeStorage, QualityWarehouse

ASSET = "compressed_dataset"
STAGE = "compressed_dataset"
ALL = "__all__"
PLOTS = "plots.json"  # base64 PNGs of the export's distributions, saved with it
CHECKS = ("ratio_within_tolerance", "no_duplicate_keys", "export_matches_manifest", "exported_images_open", "no_degenerate_captions")


class CompressedDatasetConfig(Config):
    """Target size and selection; see caption_assets/compress.py for the methods.

    These defaults are fallbacks: the asset's config takes the settings' ``compress:`` values (``build_compressed_dataset``).
    """

    target_ratio: float = 0.2
    # A cap on the export as a share of the pairs that passed ingest (scored_pairs' rows). target_ratio is a share of
    # the *kept* pairs, so a crawl that keeps more exports more; the cap holds whatever the kept share.
    max_ingested_share: float | None = None
    ratio_tolerance: float = 0.02
    n_clusters: int = 0
    semdedup_eps: float = 0.05
    alpha: float = 0.5
    score: str = "mix"
    mix_weight: float = 0.5
    min_score: float | None = None
    samples_per_shard: int = 1000
    veclip_export: bool = True
    gallery_per_outcome: int = 4  # report.html: sampled pairs shown per outcome
    seed: int = 0

    def compress_config(self, max_selected: int | None = None) -> CompressConfig:
        return CompressConfig(self.target_ratio, self.n_clusters, 20, self.semdedup_eps, self.alpha, self.score, self.mix_weight, self.min_score,
                              max_selected, self.seed)


def ingested_pairs(lake: LakeStorage) -> int:
    """Pairs that passed ingest: the rows of every scored_pairs partition (from the parquet footers)."""
    files = lake.files("scored_pairs")
    return int(pl.scan_parquet(files).select(pl.len()).collect().item()) if files else 0


def load_fused(lake: LakeStorage) -> pl.DataFrame:
    files = lake.files("fused_captions")
    if not files:
        raise Failure("nothing to compress: no fused_captions partition is materialized yet")
    return pl.scan_parquet(files).collect()


def export_dir(lake: LakeStorage) -> Path:
    return lake.asset_dir(ASSET)


def selection_frame(df: pl.DataFrame, res: Compression) -> pl.DataFrame:
    reason = np.where(res.exact_dup, "exact_duplicate", np.where(res.degenerate, "degenerate_caption", np.where(res.semantic_dup, "semantic_duplicate",
                      np.where(res.selected, None, "not_selected"))))
    return df.select("uid", "shard").with_columns(
        cluster=pl.Series(res.cluster), selection_score=pl.Series(res.score), selected=pl.Series(res.selected), drop_reason=pl.Series(reason.tolist(), dtype=pl.String)
    )


FUNNEL_SQL = (
    "SELECT * FROM (SELECT stage, outcome, coalesce(reason, '') AS reason, sum(count)::BIGINT AS count FROM funnel GROUP BY ALL) "
    "ORDER BY list_position(['raw_pairs', 'scored_pairs', 'recaptioned_pairs', 'fused_captions', 'compressed_dataset'], stage), outcome, count DESC"
)


def saved_plots(lake: LakeStorage) -> dict[str, str]:
    """The plots the export saved (``plots.json``), or recomputed from ``selection.parquet`` for an export
    written before it saved them; none before the first export."""
    sel_path, saved = export_dir(lake) / "selection.parquet", export_dir(lake) / PLOTS
    if saved.exists():
        return json.loads(saved.read_text())
    if not sel_path.exists():
        return {}
    sel = pl.read_parquet(sel_path)
    df = load_fused(lake).join(sel.select("uid", "cluster", "selected", "drop_reason", "selection_score"), on="uid", how="inner")
    res = Compression(df["cluster"].to_numpy(), (df["drop_reason"] == "exact_duplicate").to_numpy(), (df["drop_reason"] == "semantic_duplicate").to_numpy(),
                      df["selected"].to_numpy(), df["selection_score"].to_numpy(), int(df["cluster"].max() or 0) + 1, int(df["selected"].sum()),
                      (df["drop_reason"] == "degenerate_caption").to_numpy())
    return plots(df, res)


def build_report(lake: LakeStorage, warehouse: QualityWarehouse, images: dict[str, str] | None = None, gallery_per_outcome: int = 4,
                 problems: list[str] | None = None) -> str:
    """The HTML page from what is on disk: the warehouse funnel, the comparison table, the selection's plots
    (``images``, else the saved ones), the latest curation_eval, and a gallery of sampled pairs per outcome.
    Each part is drawn on its own: one that fails becomes a note in its place (and a line in ``problems``)."""
    from caption_assets.gallery import gallery_html, sample_outcomes

    out = export_dir(lake)
    paths = {"shards": str(out / "shard-*.tar"), "manifest": str(out / "manifest.parquet"), "warehouse": warehouse.path}
    return render_html(paths, {
        "comparison": lambda: table_html(warehouse.query("SELECT metric, before, after FROM comparison")),
        "distributions": lambda: images_html(images if images is not None else saved_plots(lake)),
        "evaluation": lambda: evaluation_html(*warehouse.latest_evaluation(), warehouse.latest_differences()),
        "funnel": lambda: table_html(warehouse.query(FUNNEL_SQL)),
        "gallery": lambda: gallery_html(sample_outcomes(Path(lake.root), gallery_per_outcome)),
    }, problems)


def build_compressed_dataset(settings: Settings) -> AssetsDefinition:
    """The asset with its selection defaults from the settings' ``compress:`` section."""
    config_class = with_defaults(CompressedDatasetConfig, settings.compress, f"profile {settings.profile!r}: compress")

    def compressed_dataset(context: AssetExecutionContext, config: config_class, lake: LakeStorage, warehouse: QualityWarehouse):  # type: ignore[valid-type]
        yield from compress_lake(context, config, lake, warehouse)

    return asset(
        deps=["fused_captions"],
        group_name="dataset",
        kinds={"faiss", "webdataset"},
        owners=["team:data-platform"],
        tags={"stage": "compression"},
        op_tags=LIGHT_STEP_TAGS,
        code_version="compressed_dataset-v1",
        check_specs=[AssetCheckSpec(name, asset=ASSET) for name in CHECKS],
        description=(
            "Exact dedup (sha256, and the duplicate index's verified copies), SemDeDup over a k-means codebook of the "
            "image embeddings, and TL;DR / Compress & Align codebook selection (per-cluster quota ~ size^alpha, top pairs "
            "by reward / CLIP score) to the target ratio; exported as WebDataset shards + manifest.parquet + report.html."
        ),
    )(compressed_dataset)


def compress_lake(context: AssetExecutionContext, config: CompressedDatasetConfig, lake: LakeStorage, warehouse: QualityWarehouse):
    df = load_fused(lake)
    image_emb = df["image_emb"].to_numpy() if df.height else np.zeros((0, df.schema["image_emb"].shape[0]), np.float32)
    ingested: int | None = None
    cap: int | None = None
    if config.max_ingested_share is not None:
        ingested = ingested_pairs(lake)
        cap = int(config.max_ingested_share * ingested)
    res = compress(df, image_emb, config.compress_config(cap))
    out = export_dir(lake)
    selected = df.filter(pl.Series(res.selected)).with_columns(cluster=pl.Series(res.cluster[res.selected]), selection_score=pl.Series(res.score[res.selected]))
    manifest = write_export(selected, out, config, context.run.run_id)
    selection_frame(df, res).write_parquet(out / "selection.parquet")
    comparison = before_after(df, image_emb, res, config.semdedup_eps) if df.height else pl.DataFrame({"metric": [], "before": [], "after": []})
    funnel = [("in", None, df.height), ("exact_duplicate", None, int(res.exact_dup.sum())), ("semantic_duplicate", None, int(res.semantic_dup.sum())),
              ("degenerate_caption", None, int(res.degenerate.sum())),
              ("not_selected", None, int((~res.selected & ~res.exact_dup & ~res.semantic_dup & ~res.degenerate).sum())), ("selected", None, int(res.selected.sum()))]
    warehouse.replace_partition(STAGE, ALL, funnel, None, context.run.run_id, [("target_ratio", config.target_ratio)])
    warehouse.replace_comparison(comparison, context.run.run_id)
    images = plots(df, res) if df.height else {}
    (out / PLOTS).write_text(json.dumps(images))  # later reports (curation_eval, `caption-assets report`) reuse them
    report, not_drawn = out / "report.html", []
    report.write_text(build_report(lake, warehouse, images, config.gallery_per_outcome, not_drawn), encoding="utf-8")
    for line in not_drawn:
        context.log.warning(f"report.html: {line}")
    achieved = res.selected.sum() / max(df.height, 1)
    yield MaterializeResult(
        metadata={
            "dagster/row_count": manifest.height,
            "pairs_in": df.height,
            "selected": int(res.selected.sum()),
            "achieved_ratio": float(achieved),
            "target_ratio": config.target_ratio,
            "ingested_pairs": ingested if ingested is not None else -1,
            "max_selected": cap if cap is not None else -1,
            "clusters": res.n_clusters,
            "exact_duplicates": int(res.exact_dup.sum()),
            "semantic_duplicates": int(res.semantic_dup.sum()),
            "before_after": md_table(comparison),
            "plot": MetadataValue.md(f"![distributions](data:image/png;base64,{images['distributions']})") if images else MetadataValue.md("_empty_"),
            "shards": MetadataValue.path(str(out)),
            "manifest": MetadataValue.path(str(out / "manifest.parquet")),
            "report": MetadataValue.path(str(report)),
            "report_parts_not_drawn": MetadataValue.text("; ".join(not_drawn) or "none"),
        }
    )
    eligible = int((~res.exact_dup & ~res.semantic_dup & ~res.degenerate).sum())
    yield from run_checks(out, df.height, eligible, config, cap)


def write_export(selected: pl.DataFrame, out: Path, config: CompressedDatasetConfig, run_id: str) -> pl.DataFrame:
    from caption_assets.export import write_webdataset

    return write_webdataset(selected, out, config.samples_per_shard, run_id, config.veclip_export)


def tar_keys(out: Path) -> tuple[list[str], list[str]]:
    """(keys of image members, keys of images that fail to decode) over every exported shard."""
    keys, broken = [], []
    for shard in sorted(out.glob("shard-*.tar")):
        with tarfile.open(shard) as tf:
            for m in tf:
                key, _, ext = m.name.partition(".")
                if ext in ("jpg", "png", "webp"):
                    keys.append(key)
                    try:
                        with Image.open(io.BytesIO(tf.extractfile(m).read())) as im:  # type: ignore[union-attr]
                            im.load()
                    except Exception:  # noqa: BLE001
                        broken.append(key)
    return keys, broken


def run_checks(out: Path, pairs_in: int, unique_pairs: int, config: CompressedDatasetConfig, cap: int | None = None):
    manifest = pl.read_parquet(out / "manifest.parquet")
    keys, broken = tar_keys(out)
    achieved = manifest.height / max(pairs_in, 1)
    limited_by_floor = config.min_score is not None and achieved < config.target_ratio
    ratio_target = round(config.target_ratio * pairs_in)
    too_few_unique = unique_pairs < ratio_target  # dedup left less than the target
    capped = cap is not None and cap < ratio_target  # the ingested-share cap is the binding bound
    yield AssetCheckResult(
        check_name="ratio_within_tolerance", asset_key=ASSET,
        passed=bool(abs(achieved - config.target_ratio) <= config.ratio_tolerance or limited_by_floor or pairs_in == 0
                    or (capped and manifest.height <= cap)),  # type: ignore[operator]
        severity=AssetCheckSeverity.WARN if too_few_unique or limited_by_floor else AssetCheckSeverity.ERROR,
        metadata={"achieved": float(achieved), "target": config.target_ratio, "tolerance": config.ratio_tolerance,
                  "unique_pairs_after_dedup": unique_pairs, "bound": "max_ingested_share" if capped else "target_ratio",
                  "max_selected": cap if cap is not None else -1},
    )
    yield AssetCheckResult(
        check_name="no_duplicate_keys", asset_key=ASSET,
        passed=bool(manifest["key"].is_unique().all() and manifest["uid"].is_unique().all() and len(keys) == len(set(keys))),
        metadata={"manifest_rows": manifest.height, "tar_images": len(keys)},
    )
    only_tar, only_manifest = set(keys) - set(manifest["key"]), set(manifest["key"]) - set(keys)
    yield AssetCheckResult(
        check_name="export_matches_manifest", asset_key=ASSET, passed=not only_tar and not only_manifest,
        metadata={"only_in_shards": len(only_tar), "only_in_manifest": len(only_manifest)},
    )
    yield AssetCheckResult(check_name="exported_images_open", asset_key=ASSET, passed=not broken, metadata={"broken": len(broken), "checked": len(keys)})
    degenerate = manifest.filter(pl.col("final_caption").map_elements(is_degenerate, return_dtype=pl.Boolean)) if manifest.height else manifest
    yield AssetCheckResult(
        check_name="no_degenerate_captions", asset_key=ASSET, passed=degenerate.height == 0,
        metadata={"degenerate": degenerate.height, "checked": manifest.height,
                  "examples": md_table(degenerate.select("key", "final_caption", "final_source").head(5)) if degenerate.height else "none"},
    )
