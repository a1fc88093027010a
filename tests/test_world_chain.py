"""The chain on a small world crawl: curation_eval (training sets, recipe, stage truth, asset, CLI), trace and gallery."""

from __future__ import annotations

import json
import random
import re
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import torch

from caption_assets.curation_eval.headline import gaps, headline, wide_table
from caption_assets.curation_eval.recipe import Recipe
from caption_assets.curation_eval.run import summarise
from caption_assets.curation_eval.stage_truth import LakeFrames, stage_truth
from caption_assets.curation_eval.testset import HEADLINE, METRICS, recall_at
from caption_assets.curation_eval.training_sets import TRAINING_SETS, build_training_sets
from tests.helpers import hostile_crawl

ROOT = Path(__file__).resolve().parents[1]


def _lake_inputs(n: int = 20):
    uids = [f"s::{i:03d}" for i in range(n)]
    ingested = pl.DataFrame({"uid": uids, "caption": [f"alt {i}" for i in range(n)]})
    scored = pl.DataFrame({"uid": uids, "clip_score": [i / n for i in range(n)]})
    manifest = pl.DataFrame({"uid": uids[3:8], "final_caption": [f"final {i}" for i in range(3, 8)]})
    return ingested, scored, manifest


def test_training_sets_sizes_and_members():
    ingested, scored, manifest = _lake_inputs()
    sets = build_training_sets(ingested, scored, manifest, seed=0, names=(*TRAINING_SETS, "clip_score_bottom"))
    assert sets["curated"]["caption"].to_list() == [f"final {i}" for i in range(3, 8)]
    assert sets["curated_alt_text"].to_dicts() == [{"uid": f"s::{i:03d}", "caption": f"alt {i}"} for i in range(3, 8)]
    assert sets["clip_score_top"]["uid"].to_list() == [f"s::{i:03d}" for i in (19, 18, 17, 16, 15)]
    assert sorted(sets["clip_score_bottom"]["uid"].to_list()) == [f"s::{i:03d}" for i in range(5)]
    assert sets["all_raw"].height == 20 and sets["random_same_size"].height == 5
    assert sets["random_same_size"]["uid"].is_unique().all()
    other = build_training_sets(ingested, scored, manifest, seed=1, names=("random_same_size",))
    assert set(other["random_same_size"]["uid"]) != set(sets["random_same_size"]["uid"])  # the subset follows the seed
    with pytest.raises(ValueError, match="unknown training set"):
        build_training_sets(ingested, scored, manifest, seed=0, names=("best_ever",))


def test_recall_at_k_on_a_known_similarity_matrix():
    sim = torch.tensor([[0.9, 0.1, 0.0], [0.8, 0.5, 0.1], [0.2, 0.3, 0.1]])  # rows: queries, own item on the diagonal
    assert recall_at(sim, 1) == pytest.approx(1 / 3)  # row 0 ranks first; row 1 second; row 2 third
    assert recall_at(sim, 2) == pytest.approx(2 / 3)
    assert recall_at(sim, 3) == 1.0


def test_summary_is_mean_and_sample_sd_over_seeds():
    rng = np.random.default_rng(0)
    rows = []
    for t in ("curated", "random_same_size"):
        for s in range(3):
            hits = {m: (rng.random(50) < 0.5).astype(np.uint8) for m in METRICS}
            rows.append({"training_set": t, "seed": s, "n_pairs": 10 + s, "train_seconds": 1.0,
                         **{m: float(h.mean()) for m, h in hits.items()}, **{f"hits_{m}": h.tolist() for m, h in hits.items()}})
    runs = pl.DataFrame(rows)
    ev = summarise(runs, Recipe(steps=7, batch_size=8), ["curated", "random_same_size"])
    assert ev.columns == ["training_set", "metric", "mean", "sd", "n_pairs", "samples_seen", "seeds", "ci_lo", "ci_hi"]
    assert ev.height == 2 * len(METRICS) and ev["training_set"].to_list()[:len(METRICS)] == ["curated"] * len(METRICS)
    vals = np.array([r[HEADLINE] for r in rows if r["training_set"] == "curated"])
    row = ev.filter((pl.col("training_set") == "curated") & (pl.col("metric") == HEADLINE))
    assert row["mean"][0] == pytest.approx(vals.mean()) and row["sd"][0] == pytest.approx(vals.std(ddof=1))
    assert row["samples_seen"][0] == 56 and row["seeds"][0] == "0,1,2" and row["n_pairs"][0] == 11
    assert gaps(ev)["random_same_size"] == pytest.approx(vals.mean() - np.mean([r[HEADLINE] for r in rows if r["training_set"] == "random_same_size"]))
    assert headline(ev).startswith("curated (11 pairs) text->image R@5 (held-out phrasing)") and "vs random_same_size" in headline(ev)
    assert wide_table(ev).columns == ["training_set", "n_pairs", *METRICS]


def _truth_row(uid, noise, objects, **kw):
    shard, key = uid.split("::")
    row = {"uid": uid, "shard": shard, "key": key, "noise": noise, "objects": objects, "duplicate_group": None, "expected_quarantine": None}
    return {**row, **kw}


RED_CIRCLE = [{"shape": "circle", "colour": "red", "size": "small", "position": "left"}]
BLUE_STAR = [{"shape": "star", "colour": "blue", "size": "large", "position": "top"}]


def test_stage_truth_on_a_handmade_lake():
    truth = pl.DataFrame([
        _truth_row("s::a", "correct", RED_CIRCLE, duplicate_group="g1"),
        _truth_row("s::b", "misaligned", RED_CIRCLE),
        _truth_row("s::c", "wrong_attribute", BLUE_STAR),
        _truth_row("s::d", "correct", BLUE_STAR),
        _truth_row("s::e", "exact_duplicate", RED_CIRCLE, duplicate_group="g1"),
        _truth_row("s::x", "broken", [], expected_quarantine="corrupt_image"),
    ])
    raw = pl.DataFrame({"uid": ["s::a", "s::b", "s::c", "s::d", "s::e"],
                        "caption": ["a red circle", "a green heart", "a blue heart", "a large blue star", "red circle"],
                        "duplicate_kind": [None, None, None, None, "copy"]})  # the index saw e as a verified copy of a
    scored = pl.DataFrame({"uid": raw["uid"], "keep": [True, False, False, False, True],
                           "drop_reason": [None, "low_clip_score", "low_clip_score", "low_clip_score", None],
                           "alignment_level": [1, 0, 0, 0, 1]})
    lake = LakeFrames(
        raw=raw,
        quarantine=pl.DataFrame({"shard": ["s"], "key": ["x"], "reason": ["truncated_image"]}),
        scored=scored,
        recaptioned=pl.DataFrame({"uid": ["s::a", "s::e"], "synthetic_caption": ["a red circle", "a red circle and a blue star"]}),
        fused=pl.DataFrame({"uid": ["s::a", "s::e"], "fused_caption": ["a red circle", None], "fusion_status": ["accepted", "low_score"],
                            "final_caption": ["a red circle", "red circle"]}),
        selection=pl.DataFrame({"uid": ["s::a", "s::e"], "selected": [True, False], "drop_reason": [None, "exact_duplicate"]}),
        manifest=pl.DataFrame({"uid": ["s::a"], "final_caption": ["a red circle"]}),
    )
    got = {(r["stage"], r["metric"]): (r["value"], r["n"]) for r in stage_truth(truth, lake).iter_rows(named=True)}
    assert got["raw_pairs", "quarantine_recall"] == (1.0, 1)
    assert got["raw_pairs", "quarantine_reason_accuracy"] == (0.0, 1)  # planted corrupt, reported truncated
    assert got["raw_pairs", "alt_text_attribute_accuracy"] == (3 / 5, 5)  # a, d, e name their objects; b, c do not
    assert got["scored_pairs", "filter_precision"] == (2 / 3, 3)  # d was a true caption
    assert got["scored_pairs", "misaligned_recall"] == (1.0, 1)
    assert got["scored_pairs", "wrong_attribute_recall"] == (1.0, 1)
    assert got["scored_pairs", "kept_with_false_alt_text"] == (0.0, 2)
    assert got["scored_pairs", "level_0_alt_text_correct"] == (1 / 3, 3) and got["scored_pairs", "level_1_alt_text_correct"] == (1.0, 2)
    assert got["scored_pairs", "alignment_levels_monotonic"] == (1.0, 5)
    assert got["recaptioned_pairs", "synthetic_attribute_accuracy"] == (0.5, 2)
    assert got["recaptioned_pairs", "synthetic_hallucination_rate"] == (0.5, 2)  # the blue star is not in s::e
    assert got["compressed_dataset", "duplicate_recall"] == (1.0, 1) and got["compressed_dataset", "duplicate_precision"] == (1.0, 1)
    assert got["compressed_dataset", "exact_duplicate_flagged"] == (1.0, 1)
    assert got["compressed_dataset", "exported_duplicate_copies"] == (0.0, 1)
    assert got["scored_pairs", "duplicate_recall"] == (0.0, 1)
    assert got["raw_pairs", "index_exact_duplicate_recall"] == (0.0, 1)
    assert got["raw_pairs", "index_exact_or_copy_duplicate_recall"] == (1.0, 1) and got["raw_pairs", "index_exact_or_copy_duplicate_precision"] == (1.0, 1)


def test_copy_recall_per_kind_counts_the_pair_and_checks_the_link():
    """A copy that sorts before its original is found through the original's verdict; a copy whose group-mate was
    linked to an unrelated lookalike is not found, and that wrong link costs precision."""
    from caption_assets.curation_eval.stage_truth import duplicate_metrics

    truth = pl.DataFrame([
        _truth_row("s::a", "correct", RED_CIRCLE, duplicate_group="g1", wrong_kind=None),
        _truth_row("r::b", "near_duplicate", RED_CIRCLE, duplicate_group="g1", wrong_kind="crop"),  # shard r sorts first
        _truth_row("s::c", "near_duplicate", BLUE_STAR, duplicate_group="g2", wrong_kind="shift"),
        _truth_row("s::d", "correct", BLUE_STAR, duplicate_group="g2", wrong_kind=None),
        _truth_row("s::e", "correct", BLUE_STAR, wrong_kind=None),  # a lookalike of d, no copy of anything
    ])
    raw = pl.DataFrame({"uid": ["s::a", "r::b", "s::c", "s::d", "s::e"], "duplicate_kind": ["copy", None, None, None, "copy"],
                        "duplicate_of": ["r::b", None, None, None, "s::d"], "candidate_of": [None, None, None, None, None]})
    empty = pl.DataFrame({"uid": [], "drop_reason": []}, schema={"uid": pl.String, "drop_reason": pl.String})
    got = {m: (v, n) for stage, m, v, n in duplicate_metrics(truth, empty, empty, pl.DataFrame({"uid": []}, schema={"uid": pl.String}), raw)
           if stage == "raw_pairs"}
    assert got["index_exact_or_copy_crop_recall"] == (1.0, 1)
    assert got["index_exact_or_copy_shift_recall"] == (0.0, 1)
    assert got["index_exact_or_copy_duplicate_recall"] == (0.5, 2)


def test_no_pipeline_stage_reads_the_truth_table():
    """Only the evaluation (and the world that writes the crawl) may name the truth table."""
    allowed = {ROOT / "caption_assets" / "assets" / "evaluation.py"}
    offenders = []
    for folder in (ROOT / "caption_assets", ROOT / "resources"):
        for path in folder.rglob("*.py"):
            if path in allowed or "curation_eval" in path.parts or "world" in path.parts:
                continue
            if re.search(r"truth\.parquet|import .*stage_truth|from caption_assets\.world\.crawl", path.read_text()):
                offenders.append(str(path.relative_to(ROOT)))
    assert offenders == []


def with_hostile_shards(crawl: Path, truth: pl.DataFrame) -> pl.DataFrame:
    """Add hostile shards of every format to a world crawl (every quarantine reason, shard-level ones too);
    returns the truth with their rows (good samples there are out-of-world pictures, without attribute truth)."""
    from caption_assets.world.crawl import TRUTH_SCHEMA

    rows = [{"uid": f"{shard}::{key if key is not None else '@'}", "shard": shard, "key": key,
             "noise": "ood_photo" if reason is None else "broken", "expected_quarantine": reason}
            for shard, key, reason in hostile_crawl(crawl)]
    return pl.concat([truth, pl.DataFrame(rows).cast({k: TRUTH_SCHEMA[k] for k in rows[0]})], how="diagonal_relaxed")


@pytest.fixture(scope="module")
def world_eval(tmp_path_factory):
    """A 200-pair world crawl plus hostile shards through the whole chain with its truth table moved away,
    then curation_eval. Returns (settings, truth, curation_eval's result, crawl, every other run's result)."""
    from dagster import DagsterInstance

    from caption_assets.definitions import build_definitions
    from caption_assets.settings import load_settings
    from caption_assets.shards import discover_shards
    from caption_assets.world.crawl import CrawlSpec, shard_plan, write_crawl

    tmp = tmp_path_factory.mktemp("world_eval")
    crawl, truth = write_crawl(tmp / "world", CrawlSpec(shard_plan(2, 100, ("webdataset", "manifest_jsonl")), seed=4242))
    truth = with_hostile_shards(crawl, truth)
    hidden = tmp / "kept-apart" / "truth.parquet"  # the chain runs without it anywhere near the crawl
    hidden.parent.mkdir()
    truth.write_parquet(hidden)
    (tmp / "world" / "truth.parquet").unlink()
    settings = load_settings({"CAPTION_ASSETS_PROFILE": "demo", "CAPTION_ASSETS_CRAWL_DIR": str(crawl), "CAPTION_ASSETS_DATA_DIR": str(tmp / "data"),
                              "CAPTION_ASSETS_OCR": "off"})
    defs = build_definitions(settings)
    shards = discover_shards(crawl)
    config = {"steps": 40, "seeds": [0, 1], "n_test_retrieval": 100, "n_test_zeroshot": 80, "truth_table": str(hidden)}
    runs = []

    def run(job: str, **kw):
        result = defs.resolve_job_def(job).execute_in_process(instance=instance, **kw)
        assert result.success, (job, kw.get("partition_key"))
        runs.append(result)

    with DagsterInstance.ephemeral() as instance:
        instance.add_dynamic_partitions("shards", shards)
        for shard in shards:
            run("ingest_shard", partition_key=shard)
        run("train_reward_model")
        run("compute_alignment_levels")
        for shard in shards:
            run("shard_models", partition_key=shard)
        run("compress_dataset")
        (tmp / "world" / "truth.parquet").write_bytes(hidden.read_bytes())  # back beside the crawl, for the CLI's default
        result = defs.resolve_job_def("evaluate_curation").execute_in_process(instance=instance, run_config={"ops": {"curation_eval": {"config": config}}})
    return settings, truth, result, crawl, runs


def test_curation_eval_writes_the_tables_metadata_check_and_report(world_eval):
    from resources import QualityWarehouse

    settings, truth, result, _, _ = world_eval
    assert result.success
    wh = QualityWarehouse(path=str(settings.warehouse_path))
    ev, st = wh.latest_evaluation()
    assert {"training_set", "metric", "mean", "sd", "n_pairs", "samples_seen", "seeds", "run_id"} <= set(ev.columns)
    assert ev.height == len(TRAINING_SETS) * len(METRICS) and set(ev["training_set"]) == set(TRAINING_SETS) and set(ev["metric"]) == set(METRICS)
    assert set(ev["samples_seen"]) == {40 * 64} and set(ev["seeds"]) == {"0,1"} and set(ev["run_id"]) == {result.run_id}
    assert json.loads(ev["recipe"][0])["steps"] == 40
    lake = settings.lake_dir
    n_raw = pl.read_parquet(lake / "raw_pairs" / "*.parquet").height
    n_export = pl.read_parquet(lake / "compressed_dataset" / "manifest.parquet").height
    sizes = dict(ev.group_by("training_set").agg(pl.col("n_pairs").first()).iter_rows())
    assert sizes == {"curated": n_export, "curated_alt_text": n_export, "random_same_size": n_export, "clip_score_top": n_export, "all_raw": n_raw}
    assert ev["mean"].is_between(0, 1).all() and (ev["sd"] >= 0).all()

    got = {(r["stage"], r["metric"]): (r["value"], r["n"]) for r in st.iter_rows(named=True)}
    expected_q = truth.filter(pl.col("expected_quarantine").is_not_null()).height
    assert expected_q > 0 and got["raw_pairs", "quarantine_recall"] == (1.0, expected_q)
    assert got["raw_pairs", "good_pairs_ingested"] == (1.0, truth.height - expected_q)
    assert {s for s, _ in got} == {"raw_pairs", "scored_pairs", "recaptioned_pairs", "fused_captions", "compressed_dataset"}

    mats = [e.event_specific_data.materialization for e in result.all_events if e.event_type_value == "ASSET_MATERIALIZATION"]
    meta = mats[0].metadata
    assert meta["headline"].value.startswith(f"curated ({n_export} pairs) text->image R@5 (held-out phrasing)")
    checks = [e.event_specific_data for e in result.all_events if e.event_type_value == "ASSET_CHECK_EVALUATION"]
    assert [c.check_name for c in checks] == ["curated_beats_random_same_size"]
    diffs = wh.latest_differences()
    assert set(diffs["baseline"]) == {"random_same_size", "all_raw", "curated_alt_text", "clip_score_top"} and diffs.height == 4 * len(METRICS)
    d = diffs.filter((pl.col("baseline") == "random_same_size") & (pl.col("metric") == HEADLINE)).row(0, named=True)
    assert checks[0].passed == (d["ci_lo"] > 0) and checks[0].metadata["ci_lo"].value == d["ci_lo"]
    assert (ev["ci_lo"] <= ev["mean"]).all() and (ev["mean"] <= ev["ci_hi"]).all()
    assert f"{d['diff'] * 100:+.1f} pts [{d['ci_lo'] * 100:+.1f}, {d['ci_hi'] * 100:+.1f}]" in meta["headline"].value
    runs = pl.read_parquet(lake / "curation_eval" / "runs.parquet")
    assert runs.height == len(TRAINING_SETS) * 2
    report = (lake / "compressed_dataset" / "report.html").read_text()
    assert "Does curation help?" in report and meta["headline"].value.replace(">", "&gt;") in report
    assert 'alt="distributions"' in report  # the export's plots, saved with it, not recomputed from every fused row


def test_the_evaluation_can_fail_a_bad_selection(world_eval):
    """The lowest-CLIP-score pairs (false alt-texts, mostly) train a worse model than the highest-scoring ones of the
    same size: the interval of the difference lies below zero. The same set trained twice (other seeds) ties: its
    interval covers zero. Both on the headline metric (held-out phrasing) and the canonical one."""
    from caption_assets.assets.evaluation import read_lake
    from caption_assets.curation_eval.intervals import Bootstrap, paired_difference, verdict
    from caption_assets.curation_eval.run import decode_images, evaluate_training_sets
    from caption_assets.curation_eval.testset import build_testset
    from caption_assets.ingest import POINTER_COLUMNS
    from resources import LakeStorage

    settings, _, _, _, _ = world_eval
    frames = read_lake(LakeStorage(root=str(settings.lake_dir)))
    recipe = Recipe(steps=150, batch_size=64, warmup=15)
    pixels, ok = decode_images(frames.raw.select(POINTER_COLUMNS).rows(), recipe.image_px, workers=1)
    assert ok.all()
    test = build_testset(recipe.image_px, n_retrieval=200, n_zeroshot=40)
    args = (frames.raw.select("uid", "caption"), pixels, frames.scored, frames.manifest, test, recipe)
    runs = evaluate_training_sets(*args, [0, 1], ("clip_score_top", "clip_score_bottom"), workers=2, log=lambda _: None)
    boot = Bootstrap()
    for metric in (HEADLINE, HEADLINE + "_canonical"):
        d, lo, hi = paired_difference(runs, "clip_score_bottom", "clip_score_top", metric, boot)
        assert verdict(lo, hi) == "loses to", (metric, d, lo, hi)
    again = evaluate_training_sets(*args, [2, 3], ("clip_score_bottom",), workers=2, log=lambda _: None)  # the same pairs, other seeds
    twice = pl.concat([runs.filter(pl.col("training_set") == "clip_score_bottom"), again.with_columns(training_set=pl.lit("bottom_again"))])
    for metric in (HEADLINE, HEADLINE + "_canonical"):
        d, lo, hi = paired_difference(twice, "clip_score_bottom", "bottom_again", metric, boot)
        assert lo < 0 < hi and verdict(lo, hi) == "ties with", (metric, d, lo, hi)


def test_cli_eval_prints_the_comparison_and_refuses_another_crawls_truth(world_eval, tmp_path):
    import os
    import subprocess
    import sys

    settings, _, _, crawl, _ = world_eval
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CAPTION_ASSETS_", "DAGSTER_HOME"))}
    env["DAGSTER_HOME"] = str(tmp_path / "home")
    cmd = [sys.executable, "-m", "caption_assets.cli", "eval", "--out", str(settings.data_dir), "--steps", "5", "--seeds", "3"]
    # --crawl names the crawl folder; without it the profile's (the bundled sample) is assumed, whose truth is not this crawl's
    wrong = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert wrong.returncode == 0, wrong.stderr
    assert "Does curation help?  curated (" in wrong.stdout and "Each stage against the crawl's truth table" not in wrong.stdout
    done = subprocess.run([*cmd, "--crawl", str(crawl)], capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "Each stage against the crawl's truth table" in done.stdout and "quarantine_recall" in done.stdout
    assert all(t in done.stdout for t in TRAINING_SETS)
    bad = subprocess.run([*cmd[:-2], "--seeds", "one"], capture_output=True, text=True, env=env, timeout=300)
    assert bad.returncode == 2 and "--seeds" in bad.stderr


def test_trace_follows_a_pair_through_every_stage(world_eval):
    from caption_assets.trace import render_text, trace

    settings, truth, _, _, _ = world_eval
    lake = settings.lake_dir
    manifest = pl.read_parquet(lake / "compressed_dataset" / "manifest.parquet")
    uid = manifest["uid"][0]
    t = trace(lake, uid)
    assert list(t["stages"]) == ["raw_pairs", "scored_pairs", "recaptioned_pairs", "vision_expert_tags", "fused_captions", "compressed_dataset"]
    assert t["stages"]["scored_pairs"]["outcome"] == "kept" and t["stages"]["compressed_dataset"]["outcome"] == "selected"
    assert t["stages"]["compressed_dataset"]["exported_as"]["key"] == manifest["key"][0]
    assert t["stages"]["compressed_dataset"]["exported_as"]["caption"] == manifest["final_caption"][0]
    broken = truth.filter(pl.col("expected_quarantine").is_not_null()).row(0, named=True)
    q = trace(lake, broken["uid"])
    assert list(q["stages"]) == ["raw_pairs"] and q["stages"]["raw_pairs"]["outcome"] == "quarantined"
    assert q["stages"]["raw_pairs"]["reason"] == broken["expected_quarantine"]
    exact = truth.filter(pl.col("noise") == "exact_duplicate").row(0, named=True)
    d = trace(lake, exact["uid"])
    assert exact["duplicate_of"] in d["same_image"] and exact["duplicate_of"] in render_text(d)
    assert trace(lake, f"{broken['shard']}::no-such-key") is None


def test_hostile_shards_go_through_every_stage_and_every_reader(world_eval, tmp_path):
    """Broken shards (cut, unreadable, empty, a sidecar that does not read) and every bad member beside a world
    crawl: every run and check green, every planted reason in the quarantine, the funnel reconciled shard by shard
    and stage to stage, and every reader of the lake (report, gallery, trace, stage truth, `caption-assets report`)
    takes the quarantine rows that have no key."""
    import os
    import subprocess
    import sys

    from caption_assets.gallery import sample_outcomes
    from caption_assets.ingest import quarantine_uid
    from caption_assets.trace import trace
    from resources import QualityWarehouse

    settings, truth, result, _, runs = world_eval
    checks = [e.event_specific_data for r in runs for e in r.all_events if e.event_type_value == "ASSET_CHECK_EVALUATION"]
    assert {"raw_pairs_reconcile", "export_matches_manifest", "no_degenerate_captions"} <= {c.check_name for c in checks}
    assert all(c.passed for c in checks), [c.check_name for c in checks if not c.passed]

    wh = QualityWarehouse(path=str(settings.warehouse_path))
    planted = truth.filter(pl.col("expected_quarantine").is_not_null()).group_by("shard", "expected_quarantine").len().sort(pl.all())
    got = wh.query("SELECT partition AS shard, reason AS expected_quarantine, count(*)::UINTEGER AS len FROM quarantine WHERE stage = 'raw_pairs' GROUP BY ALL")
    assert got.sort(pl.all()).equals(planted.cast({"len": pl.UInt32}))
    keyless = wh.query("SELECT partition, reason FROM quarantine WHERE key IS NULL ORDER BY ALL")
    assert keyless.rows() == [("a.tar", "unsafe_path"), ("a.tar", "unsafe_path"), ("broken.parquet", "unreadable_shard"), ("cut.tar", "truncated_tar"),
                              ("garbage.tar", "unreadable_shard"), ("side.tar", "unreadable_sidecar")]
    f = wh.funnel()
    n = lambda stage, outcome, shard=None: int(f.filter((pl.col("stage") == stage) & (pl.col("outcome") == outcome)  # noqa: E731
                                                        & (pl.col("partition") == shard if shard else pl.lit(True)))["count"].sum())
    per_shard = truth.group_by("shard").agg(planted=pl.len(), good=pl.col("expected_quarantine").is_null().sum())
    for shard, planted_n, good in per_shard.iter_rows():
        assert n("raw_pairs", "in", shard) == planted_n, shard  # every record seen, including the shard-level failures
        assert n("raw_pairs", "passed", shard) + n("raw_pairs", "flagged", shard) == good, shard
        assert n("scored_pairs", "in", shard) == good, shard
    assert n("raw_pairs", "in", "empty.tar") == 0 and n("scored_pairs", "in", "empty.tar") == 0
    assert n("recaptioned_pairs", "in") == n("scored_pairs", "kept") and n("fused_captions", "in") == n("recaptioned_pairs", "kept")
    assert n("compressed_dataset", "in") == n("fused_captions", "in") > 0
    exported = pl.read_parquet(settings.lake_dir / "compressed_dataset" / "manifest.parquet")
    assert exported.height == n("compressed_dataset", "selected") > 0

    report = (settings.lake_dir / "compressed_dataset" / "report.html").read_text()
    assert "could not be drawn" not in report and "quarantined at raw_pairs: truncated_tar" in report and "cut.tar::@cut.tar@" in report
    rows = sample_outcomes(settings.lake_dir, per_outcome=100)
    assert all(r["uid"] for r in rows)
    by_outcome = {r["outcome"]: r for r in rows}
    for reason in ("truncated_tar", "unreadable_shard", "unreadable_sidecar", "unsafe_path", "decompression_bomb", "caption_not_utf8"):
        assert f"quarantined at raw_pairs: {reason}" in by_outcome, reason

    quarantined = pl.read_parquet(settings.lake_dir / "raw_pairs_quarantine" / "*.parquet").with_columns(uid=quarantine_uid())
    assert quarantined["uid"].is_unique().all() and quarantined["uid"].null_count() == 0
    for uid, reason, member in quarantined.filter(pl.col("key").is_null()).select("uid", "reason", "member").rows():
        t = trace(settings.lake_dir, uid)
        assert t is not None and list(t["stages"]) == ["raw_pairs"], uid
        assert t["stages"]["raw_pairs"]["outcome"] == "quarantined" and t["stages"]["raw_pairs"]["reason"] == reason and t["stages"]["raw_pairs"]["member"] == member

    st = {(r["stage"], r["metric"]): (r["value"], r["n"]) for r in wh.latest_evaluation()[1].iter_rows(named=True)}
    expected_q = truth.filter(pl.col("expected_quarantine").is_not_null()).height
    assert st["raw_pairs", "quarantine_recall"] == (1.0, expected_q) and st["raw_pairs", "quarantine_reason_accuracy"] == (1.0, expected_q)
    assert st["raw_pairs", "good_pairs_quarantined"] == (0.0, truth.height - expected_q)

    env = {k: v for k, v in os.environ.items() if not k.startswith(("CAPTION_ASSETS_", "DAGSTER_HOME"))}
    cli = [sys.executable, "-m", "caption_assets.cli"]
    cut = quarantined.filter(pl.col("reason") == "truncated_tar")["uid"][0]
    traced = subprocess.run([*cli, "trace", cut, "--json", "--out", str(settings.data_dir)], capture_output=True, text=True, env=env, timeout=120)
    assert traced.returncode == 0, traced.stderr
    assert json.loads(traced.stdout)["stages"]["raw_pairs"]["reason"] == "truncated_tar"
    page = tmp_path / "report.html"
    done = subprocess.run([*cli, "report", "--out", str(settings.data_dir), "--html", str(page)], capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "unreadable_sidecar" in done.stdout and "could not be drawn" not in page.read_text() and "cut.tar::@cut.tar@" in page.read_text()


def test_report_gallery_in_a_real_browser(world_eval, tmp_path):
    """The gallery renders, its thumbnails load, and the outcome filter shows only that outcome's cards."""
    import shutil

    from caption_assets.assets.compressed import build_report
    from resources import LakeStorage, QualityWarehouse

    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        pytest.skip("Chromium is not installed (apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    settings, _, _, _, _ = world_eval
    page_file = tmp_path / "report.html"
    page_file.write_text(build_report(LakeStorage(root=str(settings.lake_dir)), QualityWarehouse(path=str(settings.warehouse_path)), gallery_per_outcome=3))
    selection = pl.read_parquet(settings.lake_dir / "compressed_dataset" / "selection.parquet")
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=chromium, headless=True, args=["--no-sandbox", "--disable-gpu", "--disable-background-networking"])
        page = browser.new_page(viewport={"width": 1300, "height": 1000})
        page.goto(page_file.as_uri())
        cards = page.locator("#gallery .card")
        total = cards.count()
        outcomes = page.eval_on_selector_all("#gallery .card", "cs => cs.map(c => c.dataset.outcome)")
        assert "selected" in outcomes and any(o.startswith("quarantined at raw_pairs") for o in outcomes) and any(o.startswith("filtered:") for o in outcomes)
        assert outcomes.count("selected") == min(3, int(selection["selected"].sum()))
        loaded = page.eval_on_selector_all("#gallery .card img", "is => is.map(i => i.complete && i.naturalWidth > 0)")
        assert loaded and all(loaded)
        page.locator('#gallery .filters button[data-filter="selected"]').click()
        visible = page.eval_on_selector_all("#gallery .card", "cs => cs.filter(c => !c.hidden).map(c => c.dataset.outcome)")
        assert visible == ["selected"] * outcomes.count("selected")
        page.locator('#gallery .filters button[data-filter="*"]').click()
        assert page.eval_on_selector_all("#gallery .card", "cs => cs.filter(c => !c.hidden).length") == total
        page.locator('#gallery .filters button[data-filter="selected"]').click()
        page.locator("#gallery").screenshot(path=str(tmp_path / "gallery.png"))
        browser.close()
    print(f"\ngallery screenshot: {tmp_path / 'gallery.png'}")


def test_cli_trace_json_and_unknown_uid(world_eval):
    import os
    import subprocess
    import sys

    settings, _, _, _, _ = world_eval
    uid = pl.read_parquet(settings.lake_dir / "compressed_dataset" / "manifest.parquet")["uid"][0]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CAPTION_ASSETS_", "DAGSTER_HOME"))}
    cmd = [sys.executable, "-m", "caption_assets.cli", "trace", "--out", str(settings.data_dir)]
    shard, key = uid.split("::")
    done = subprocess.run([*cmd, "--shard", shard, "--key", key, "--json"], capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["stages"]["compressed_dataset"]["outcome"] == "selected"
    unknown = subprocess.run([*cmd, f"{shard}::nope"], capture_output=True, text=True, env=env, timeout=120)
    assert unknown.returncode == 1 and unknown.stdout == "" and unknown.stderr.count("\n") == 1 and "no stage has a pair" in unknown.stderr


def test_same_seeds_give_the_same_figures_whichever_worker_runs_them():
    """Seeds are recorded because they are enough: a run repeats exactly, in one process or in two workers."""
    from caption_assets.curation_eval.run import evaluate_training_sets
    from caption_assets.curation_eval.testset import build_testset, shrink
    from caption_assets.world.captions import paraphrase
    from caption_assets.world.evaluate import as_crawled
    from caption_assets.world.scene import sample_scene, scene_rng

    threads_before = torch.get_num_threads()
    recipe = Recipe(steps=6, batch_size=16, warmup=2)
    scenes = [sample_scene(scene_rng("repeat", 0, i)) for i in range(24)]
    pixels = np.stack([shrink(as_crawled(s), recipe.image_px) for s in scenes])
    rng = random.Random(0)
    ingested = pl.DataFrame({"uid": [f"s::{i:02d}" for i in range(24)], "caption": [paraphrase(s, rng) for s in scenes]})
    scored = ingested.select("uid", clip_score=pl.Series(np.linspace(0, 1, 24)))
    manifest = ingested.head(8).rename({"caption": "final_caption"})
    test = build_testset(recipe.image_px, n_retrieval=20, n_zeroshot=16)
    args = (ingested, pixels, scored, manifest, test, recipe, [0, 1], ("curated", "random_same_size"))
    one = evaluate_training_sets(*args, workers=1, log=lambda _: None).drop("train_seconds")
    two = evaluate_training_sets(*args, workers=2, log=lambda _: None).drop("train_seconds")
    assert one.height == 4 and one.equals(two)
    assert torch.get_num_threads() == threads_before  # the in-process path gives the caller its threads back
