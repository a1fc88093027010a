"""``curation_eval``: does the exported dataset train a better model than the crawl it came from?

Thin Dagster layer over ``caption_assets.curation_eval``: read the lake, decode each ingested image
once, train the fixed recipe on every training set and seed, measure on the world's test split, and
judge each stage against the crawl's truth table when there is one (only this asset reads it).
"""


import json
from pathlib import Path

import polars as pl
from dagster import AssetCheckResult, AssetsDefinition, AssetCheckSeverity, AssetCheckSpec, AssetExecutionContext, Config, Failure, MaterializeResult, MetadataValue, asset

from caption_assets.placement import LIGHT_STEP_TAGS
from caption_assets.assets.compressed import build_report, export_dir
from caption_assets.curation_eval.headline import BASELINES, difference, differences_table, figure, gaps, headline, pts, wide_table
from caption_assets.curation_eval.intervals import Bootstrap, differences, verdict
from caption_assets.curation_eval.recipe import Recipe
from caption_assets.curation_eval.stage_truth import LakeFrames, stage_truth
from caption_assets.curation_eval.metrics import HEADLINE, METRICS
from caption_assets.curation_eval.training_sets import TRAINING_SETS
from caption_assets.ingest import POINTER_COLUMNS
from caption_assets.metadata import md_table
from caption_assets.compress import semdedup_alone
from caption_assets.config_defaults import with_defaults
from caption_assets.settings import Settings
from resources import CrawlSource, LakeStorage, QualityWarehouse

ASSET = "curation_eval"
CHECK = "curated_beats_random_same_size"
_RECIPE = Recipe()


class CurationEvalConfig(Config):
    """The recipe is fixed for all training sets of a run; change it here and it changes for all of them.
    Defaults are the settings' ``evaluation:`` section (``build_curation_eval``), these fields' values otherwise."""

    seeds: list[int] = [0, 1, 2]
    model: str = _RECIPE.model  # bag (seconds a run; learns from hundreds of pairs) or open_clip (a small CLIP end to end)
    lr: float | None = None  # default: the model's (recipe.DEFAULT_LR)
    steps: int = _RECIPE.steps
    batch_size: int = _RECIPE.batch_size
    training_sets: list[str] = list(TRAINING_SETS)
    n_test_retrieval: int = 500
    n_test_zeroshot: int = 400
    workers: int = 2
    semdedup_eps: float = 0.05  # SemDeDup-alone figure beside the copy verdicts (default: the profile's compress.semdedup_eps)
    truth_table: str | None = None  # default: truth.parquet beside the crawl folder (world crawls write it there)

    def recipe(self) -> Recipe:
        return Recipe(steps=self.steps, batch_size=self.batch_size, warmup=max(1, self.steps // 10), model=self.model, lr=self.lr)


def read_lake(lake: LakeStorage, semdedup_eps: float | None = None) -> LakeFrames:
    def frame(asset: str, columns: list[str]) -> pl.DataFrame:
        files = lake.files(asset)
        return pl.scan_parquet(files).select(columns).collect() if files else pl.DataFrame()

    export = lake.asset_dir("compressed_dataset")
    if not (export / "manifest.parquet").exists() or not (export / "selection.parquet").exists():
        raise Failure(f"nothing to evaluate: no compressed dataset under {export} (materialize compressed_dataset first)")
    return LakeFrames(
        raw=frame("raw_pairs", ["uid", "caption", "duplicate_kind", "duplicate_of", "candidate_of", *POINTER_COLUMNS]),
        quarantine=frame("raw_pairs_quarantine", ["shard", "key", "reason"]),
        scored=frame("scored_pairs", ["uid", "keep", "drop_reason", "alignment_level", "clip_score"]),
        recaptioned=frame("recaptioned_pairs", ["uid", "synthetic_caption"]),
        fused=frame("fused_captions", ["uid", "fused_caption", "fusion_status", "final_caption"]),
        selection=pl.read_parquet(export / "selection.parquet", columns=["uid", "selected", "drop_reason"]),
        manifest=pl.read_parquet(export / "manifest.parquet", columns=["uid", "final_caption"]),
        semdedup=None if semdedup_eps is None else _semdedup_alone(frame("scored_pairs", ["uid", "image_emb"]), semdedup_eps),
    )


def _semdedup_alone(scored: pl.DataFrame, eps: float) -> pl.DataFrame:
    if scored.height == 0:
        return pl.DataFrame({"uid": [], "flagged": []}, schema={"uid": pl.String, "flagged": pl.Boolean})
    return pl.DataFrame({"uid": scored["uid"], "flagged": semdedup_alone(scored["image_emb"].to_numpy(), eps)})


def truth_path(config: CurationEvalConfig, crawl: CrawlSource) -> Path:
    return Path(config.truth_table) if config.truth_table else Path(crawl.crawl_dir).resolve().parent / "truth.parquet"


def _asset_decorator():
    return asset(
        deps=["compressed_dataset"],
        group_name="dataset",
        kinds={"pytorch", "duckdb"},
        owners=["team:data-platform"],
        tags={"stage": "evaluation"},
        op_tags=LIGHT_STEP_TAGS,
        code_version="curation_eval-v2",  # v2: the bag recipe by default, R@5 headline
        check_specs=[AssetCheckSpec(CHECK, asset=ASSET, description=(
            "curated must train a better model than a random subset of the same size (text->image R@5, held-out phrasing; README \"Does curation help?\"): "
            "passes when the 95% interval of the difference lies above 0, warns when it straddles 0, fails when it lies below"))],
        description=(
            "DataComp in miniature: the same training recipe (model, samples seen, seeds) trained on the curated "
            "export, its images with their alt-texts, a random subset of the same size, the top pairs by CLIP score, and "
            "every ingested pair; measured on the world's held-out test split. Plus every stage judged against the crawl's truth table."
        ),
    )


def build_curation_eval(settings: Settings) -> AssetsDefinition:
    """The asset with its recipe defaults from the settings' ``evaluation:`` section (``enabled`` aside)."""
    section = {k: v for k, v in settings.evaluation.items() if k != "enabled"}
    section.setdefault("semdedup_eps", settings.compress.get("semdedup_eps", 0.05))
    config_class = with_defaults(CurationEvalConfig, section, f"profile {settings.profile!r}: evaluation")

    def curation_eval(context: AssetExecutionContext, config: config_class, lake: LakeStorage, warehouse: QualityWarehouse, crawl: CrawlSource):  # type: ignore[valid-type]
        yield from evaluate_lake(context, config, lake, warehouse, crawl)

    return _asset_decorator()(curation_eval)


def evaluate_lake(context: AssetExecutionContext, config: CurationEvalConfig, lake: LakeStorage, warehouse: QualityWarehouse, crawl: CrawlSource):
    """Train the recipe on every training set and seed, measure, judge each stage against the truth; yields the
    materialization and the check."""
    from caption_assets.curation_eval.run import decode_images, evaluate_training_sets, summarise  # torch: in the step only
    from caption_assets.curation_eval.testset import build_testset

    frames = read_lake(lake, config.semdedup_eps)
    if frames.manifest.height == 0:
        raise Failure("nothing to evaluate: the compressed dataset exported no pairs")
    recipe = config.recipe()
    pixels, ok = decode_images(frames.raw.select(POINTER_COLUMNS).rows(), recipe.image_px, config.workers)
    ingested = frames.raw.filter(pl.Series(ok)).select("uid", "caption")
    if (~ok).any():
        context.log.warning(f"{int((~ok).sum())} ingested image(s) no longer decode; left out of every training set")
    test = build_testset(recipe.image_px, config.n_test_retrieval, config.n_test_zeroshot)
    runs = evaluate_training_sets(ingested, pixels[ok], frames.scored, frames.manifest, test, recipe, config.seeds,
                                  tuple(config.training_sets), config.workers, log=context.log.info)
    boot = Bootstrap()
    evaluation = summarise(runs, recipe, config.training_sets, boot)
    diffs = differences(runs, "curated", [b for b in BASELINES if b in config.training_sets], list(METRICS), boot)
    truth_file = truth_path(config, crawl)
    truth, why = None, f"no truth table at {truth_file}: stage figures skipped"
    if truth_file.exists():
        table = pl.read_parquet(truth_file)
        covered = frames.raw.join(table.select("uid"), on="uid", how="semi").height / max(frames.raw.height, 1)
        if covered < 0.99:  # another crawl's truth would give figures over nothing
            why = f"the truth table at {truth_file} describes {covered:.0%} of the ingested pairs: not this crawl's; stage figures skipped"
            context.log.warning(why)
        else:
            truth = stage_truth(table, frames)
    run_id = context.run.run_id
    recipe_json = json.dumps({**recipe.describe(), "seeds": config.seeds, "n_test_retrieval": config.n_test_retrieval, "n_test_zeroshot": config.n_test_zeroshot})
    warehouse.add_evaluation(evaluation, truth, run_id, recipe_json, diffs)
    lake.write_parquet(runs, ASSET, "runs")
    lake.write_parquet(evaluation, ASSET, "evaluation")
    lake.write_parquet(diffs, ASSET, "differences")
    if truth is not None:
        lake.write_parquet(truth, ASSET, "stage_truth")
    else:
        lake.path(ASSET, "stage_truth").unlink(missing_ok=True)  # never leave an earlier run's figures beside this run's
    (export_dir(lake) / "report.html").write_text(build_report(lake, warehouse), encoding="utf-8")
    line = headline(evaluation, diffs)
    context.log.info(line)
    cur = figure(evaluation, "curated") or (0.0, 0.0)
    yield MaterializeResult(
        metadata={
            "headline": MetadataValue.text(line),
            f"curated_{HEADLINE}": cur[0],
            **{f"gap_vs_{b}": g for b, g in gaps(evaluation).items()},
            "differences": md_table(differences_table(diffs)) if not diffs.is_empty() else MetadataValue.text("no baseline compared"),
            "evaluation": md_table(wide_table(evaluation)),
            "stage_truth": md_table(truth) if truth is not None else MetadataValue.text(why),
            "recipe": MetadataValue.json(json.loads(recipe_json)),
            "ingested_pairs": ingested.height,
            "train_seconds": float(runs["train_seconds"].sum()),
            "report": MetadataValue.path(str(export_dir(lake) / "report.html")),
        }
    )
    d = difference(diffs, "random_same_size")
    if d is None:
        yield AssetCheckResult(check_name=CHECK, asset_key=ASSET, passed=True,
                               description="not measured: this run's training sets lack curated or random_same_size")
        return
    said = verdict(d[1], d[2])
    yield AssetCheckResult(
        check_name=CHECK, asset_key=ASSET, passed=said == "beats", severity=AssetCheckSeverity.WARN if said == "ties with" else AssetCheckSeverity.ERROR,
        description=f"curated {said} random_same_size: {pts(*d)} (95%)",
        metadata={"metric": HEADLINE, "difference": d[0], "ci_lo": d[1], "ci_hi": d[2], "curated": cur[0],
                  "random_same_size": (figure(evaluation, "random_same_size") or (float("nan"),))[0]},
    )
