"""The whole chain on a small crawl through Dagster: every stage, the funnel, the export, the checks."""

from __future__ import annotations

import glob
import json

import polars as pl
import pytest
import webdataset as wds

from caption_assets.definitions import build_definitions
from resources import QualityWarehouse
from tests.helpers import noise_image, write_tar

@pytest.fixture(scope="module")
def chain(tmp_path_factory):
    from dagster import DagsterInstance

    tmp = tmp_path_factory.mktemp("chain")
    crawl = tmp / "crawl"
    crawl.mkdir()
    for s in range(2):
        members = []
        for i in range(20):
            members += [(f"{i:03d}.jpg", noise_image(seed=s * 50 + i + 1)), (f"{i:03d}.txt", f"a plain square in colour {i % 4} number {s}{i}".encode())]
        members += [("dup.jpg", noise_image(seed=7)), ("dup.txt", b"a duplicate of sample 6 of the first shard")]  # exact duplicate
        members += [("bad.jpg", b"\x89PNG\r\n\x1a\n broken"), ("bad.txt", b"broken png")]
        write_tar(crawl / f"s{s}.tar", members)
    from caption_assets.settings import load_settings

    settings = load_settings({"CAPTION_ASSETS_PROFILE": "demo", "CAPTION_ASSETS_CRAWL_DIR": str(crawl), "CAPTION_ASSETS_DATA_DIR": str(tmp / "data")})
    defs = build_definitions(settings)
    results = {}
    with DagsterInstance.ephemeral() as instance:
        instance.add_dynamic_partitions("shards", ["s0.tar", "s1.tar"])
        for shard in ("s0.tar", "s1.tar"):
            assert defs.resolve_job_def("ingest_shard").execute_in_process(partition_key=shard, instance=instance).success
        results["levels"] = defs.resolve_job_def("compute_alignment_levels").execute_in_process(instance=instance)
        for shard in ("s0.tar", "s1.tar"):
            # a relative CLIP floor: these noise images are no world scenes, the demo's absolute floor would drop them all
            keep = {"ops": {"scored_pairs": {"config": {"min_clip_score": None, "drop_clip_quantile": 0.2}}}}
            results[f"chain:{shard}"] = defs.resolve_job_def("shard_chain").execute_in_process(partition_key=shard, instance=instance, run_config=keep)
        results["compress"] = defs.resolve_job_def("compress_dataset").execute_in_process(instance=instance)
    return settings, results


def test_every_run_and_check_succeeds(chain):
    _, results = chain
    assert all(r.success for r in results.values())
    checks = [e.event_specific_data for r in results.values() for e in r.all_events if e.event_type_value == "ASSET_CHECK_EVALUATION"]
    names = {c.check_name for c in checks}
    assert {"raw_pairs_reconcile", "ratio_within_tolerance", "no_duplicate_keys", "export_matches_manifest", "exported_images_open"} <= names
    assert all(c.passed for c in checks)


def test_funnel_reconciles_stage_to_stage(chain):
    settings, _ = chain
    f = QualityWarehouse(path=str(settings.warehouse_path)).funnel()
    total = lambda stage, outcome: int(f.filter((pl.col("stage") == stage) & (pl.col("outcome") == outcome))["count"].sum())  # noqa: E731
    assert total("raw_pairs", "in") == 44
    assert total("raw_pairs", "quarantined") == 2
    raw_rows = total("raw_pairs", "passed") + total("raw_pairs", "flagged")
    assert total("scored_pairs", "in") == raw_rows == 42
    assert total("scored_pairs", "kept") + total("scored_pairs", "filtered") == raw_rows
    assert total("recaptioned_pairs", "in") == total("scored_pairs", "kept")
    assert total("fused_captions", "in") == total("recaptioned_pairs", "kept")
    assert total("fused_captions", "fused") + total("fused_captions", "fallback") == total("fused_captions", "in")
    n = total("compressed_dataset", "in")
    assert n == total("fused_captions", "in")
    parts = sum(total("compressed_dataset", o) for o in ("exact_duplicate", "semantic_duplicate", "degenerate_caption", "not_selected", "selected"))
    # the profile's ratio of the kept pairs, under its cap of 30% of the ingested ones: here the cap binds (12 of 42)
    ratio_target, cap = round(settings.compress["target_ratio"] * n), int(settings.compress["max_ingested_share"] * raw_rows)
    assert cap == 12 < ratio_target
    assert parts == n and total("compressed_dataset", "selected") == cap


def test_the_ratio_check_names_the_ingested_cap_as_the_binding_bound(chain):
    _, results = chain
    (check,) = [e.event_specific_data for e in results["compress"].all_events
                if e.event_type_value == "ASSET_CHECK_EVALUATION" and e.event_specific_data.check_name == "ratio_within_tolerance"]
    meta = {k: v.value for k, v in check.metadata.items()}
    assert check.passed and meta["bound"] == "max_ingested_share" and meta["max_selected"] == 12


def test_fused_outputs_keep_all_captions_side_by_side(chain):
    settings, _ = chain
    df = pl.read_parquet(settings.lake_dir / "fused_captions" / "s0.tar.parquet")
    assert {"caption", "synthetic_caption", "fused_caption", "final_caption", "final_source", "fusion_status"} <= set(df.columns)
    assert set(df["final_source"].unique()) <= {"fused", "synthetic", "alt_text"}
    accepted = df.filter(pl.col("fusion_status") == "accepted")
    assert (accepted["final_caption"] == accepted["fused_caption"]).all()
    fallback = df.filter(pl.col("fusion_status") != "accepted")
    assert all(row["final_caption"] in (row["caption"], row["synthetic_caption"]) for row in fallback.iter_rows(named=True))


def test_export_reads_back_with_webdataset_and_matches_the_manifest(chain):
    settings, _ = chain
    out = settings.lake_dir / "compressed_dataset"
    manifest = pl.read_parquet(out / "manifest.parquet")
    ds = wds.WebDataset(sorted(glob.glob(str(out / "shard-*.tar"))), shardshuffle=False).decode("pil").to_tuple("__key__", "jpg;png;webp", "txt", "json", "alt.txt")
    seen = {}
    for key, image, caption, meta, alt in ds:
        assert image.size[0] > 0 and caption == meta["final_caption"] and alt == meta["alt_text"]
        seen[key] = meta["uid"]
    assert seen == dict(zip(manifest["key"], manifest["uid"]))
    info = json.loads((out / "dataset_info.json").read_text())  # the counts a training script reads, beside the manifest
    assert info["num_samples"] == manifest.height == len(seen)
    assert info["shard_samples"] == dict(manifest.group_by("shard").len().iter_rows()) == json.loads((out / "sizes.json").read_text())
    assert sorted(info["shard_samples"]) == [p.rsplit("/", 1)[1] for p in sorted(glob.glob(str(out / "shard-*.tar")))] and info["num_shards"] == len(info["shard_samples"])
    assert manifest["uid"].is_unique().all()
    sel = pl.read_parquet(out / "selection.parquet")
    assert sel.filter("selected")["uid"].sort().to_list() == manifest["uid"].sort().to_list()
    # the planted duplicate image never makes it twice
    assert manifest["sha256"].is_unique().all()
    html = (out / "report.html").read_text()
    assert "Before / after compression" in html and "data:image/png;base64," in html
    assert json.loads(json.dumps(meta))["lineage"]["source_shard"] in ("s0.tar", "s1.tar")


def test_partitions_carry_previews_of_the_rows_that_matter(chain):
    """Each per-shard stage's metadata shows a few of its dropped / quarantined / rejected rows, with the reason."""
    settings, results = chain
    meta = {}
    for name, r in results.items():
        for e in r.all_events:
            if e.event_type_value == "ASSET_MATERIALIZATION":
                m = e.event_specific_data.materialization
                meta[(m.asset_key.to_user_string(), m.partition)] = m.metadata
    raw = meta["raw_pairs", "s0.tar"]
    assert "| reason | key | member | message |" in raw["preview_quarantined"].value and "bad" in raw["preview_quarantined"].value
    scored = pl.read_parquet(settings.lake_dir / "scored_pairs" / "s0.tar.parquet")
    dropped = scored.filter(~pl.col("keep"))
    text = meta["scored_pairs", "s0.tar"]["preview_dropped"].value
    assert dropped.height and all(reason in text for reason in dropped["drop_reason"].unique())
    first = dropped.sort("drop_reason", "key").row(0, named=True)
    assert f"| {first['drop_reason']} | {first['key']} |" in text
    assert text.count("\n") - 1 == dropped.group_by("drop_reason").agg(pl.len().clip(upper_bound=2)).get_column("len").sum()
    assert "preview_rejected_fusions" in meta["fused_captions", "s0.tar"] and "preview_candidates" in meta["recaptioned_pairs", "s0.tar"]
