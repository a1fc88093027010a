"""Global alignment levels: one versioned set of edges for every scored partition; a new version makes them stale."""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl
from dagster import AssetKey

from caption_assets.definitions import build_definitions
from caption_assets.schedules import stale_inputs
from caption_assets.scoring import assign_levels
from resources import DuplicateIndex, LakeStorage, QualityWarehouse
from tests.helpers import noise_image, write_tar

RELATIVE_FLOOR = {"min_clip_score": None, "drop_clip_quantile": 0.2}  # noise textures are no world scenes


def stale_status(defs, instance, partition: str):
    from dagster._core.definitions.data_version import CachingStaleStatusResolver
    from dagster._core.loader import LoadingContextForTest

    resolver = CachingStaleStatusResolver(instance, defs.resolve_asset_graph(), LoadingContextForTest(instance))
    return resolver.get_status(AssetKey("scored_pairs"), partition).value


def test_every_partition_uses_the_global_edges_and_a_new_version_makes_them_stale(tmp_path: Path, settings_for):
    from dagster import DagsterInstance

    (tmp_path / "dagster_home").mkdir()
    with DagsterInstance.local_temp(tempdir=str(tmp_path / "dagster_home")) as instance:  # schedules need a persistent instance
        check_levels(tmp_path, settings_for, instance)


def check_levels(tmp_path: Path, settings_for, instance) -> None:
    crawl = tmp_path / "crawl"
    crawl.mkdir()
    shards = ["s0.tar", "s1.tar"]
    for s, name in enumerate(shards):
        members = []
        for i in range(24):
            members += [(f"{i:03d}.jpg", noise_image(s * 100 + i)), (f"{i:03d}.txt", f"texture {i} in shard {s} of the test".encode())]
        write_tar(crawl / name, members)
    settings = settings_for(crawl)
    defs = build_definitions(settings)
    instance.add_dynamic_partitions("shards", shards)
    job = lambda name, **kw: defs.resolve_job_def(name).execute_in_process(instance=instance, **kw)  # noqa: E731
    for s in shards:
        assert job("ingest_shard", partition_key=s).success

    # scoring before the first levels fails with the step to take
    early = job("shard_models", partition_key="s0.tar", raise_on_error=False)
    assert not early.success and "materialize `alignment_levels`" in str(next(e for e in early.all_events if e.event_type_value == "STEP_FAILURE").event_specific_data.error.message)

    levels = job("compute_alignment_levels").asset_materializations_for_node("alignment_levels")[0].metadata
    assert levels["reference_pairs"].value == 48 and levels["reference_shards"].value == 2
    current = json.loads((settings.lake_dir / "alignment_levels" / "current.json").read_text())
    assert current["version"] == levels["version"].value and (settings.lake_dir / "alignment_levels" / f"{current['version']}.json").exists()
    assert len(current["boundaries"]) == 3 and current["boundaries"] == sorted(current["boundaries"])

    scoring = {"ops": {"scored_pairs": {"config": RELATIVE_FLOOR}}}
    for s in shards:
        run = job("shard_models", partition_key=s, run_config=scoring)
        meta = run.asset_materializations_for_node("scored_pairs")[0].metadata
        assert meta["alignment_levels_version"].value == current["version"] and meta["alignment_level_boundaries"].value == current["boundaries"]
        scored = pl.read_parquet(settings.lake_dir / "scored_pairs" / f"{s}.parquet")
        assert scored["alignment_level"].to_list() == assign_levels(scored["clip_score"].to_numpy(), current["boundaries"]).tolist()
        assert stale_status(defs, instance, s) == "FRESH"
    wh = QualityWarehouse(path=str(settings.warehouse_path))
    assert wh.query("SELECT partition, version FROM versions WHERE name = 'alignment_levels' ORDER BY partition").rows() == [(s, current["version"]) for s in shards]
    resources = (wh, LakeStorage(root=str(settings.lake_dir)), DuplicateIndex(path=str(settings.duplicate_index_path)))
    assert stale_inputs(*resources) == {}

    # the same reference again: same version, nothing stale
    assert job("compute_alignment_levels").asset_materializations_for_node("alignment_levels")[0].metadata["version"].value == current["version"]
    assert stale_status(defs, instance, "s0.tar") == "FRESH"
    # a smaller reference moves the edges: a new version, and every scored partition is stale (UI and backfill)
    smaller = job("compute_alignment_levels", run_config={"ops": {"alignment_levels": {"config": {"reference_size": 12}}}})
    new = smaller.asset_materializations_for_node("alignment_levels")[0].metadata["version"].value
    assert new != current["version"]
    assert [stale_status(defs, instance, s) for s in shards] == ["STALE", "STALE"]
    assert stale_inputs(*resources) == {s: "stale alignment_levels" for s in shards}
    job("shard_models", partition_key="s1.tar", run_config=scoring)
    assert stale_inputs(*resources) == {"s0.tar": "stale alignment_levels"}

    from dagster import build_schedule_context

    nightly = defs.resolve_schedule_def("nightly_shard_backfill")
    from datetime import datetime, timezone

    context = build_schedule_context(instance=instance, resources=dict(zip(("warehouse", "lake", "duplicates"), resources)), repository_def=defs.get_repository_def(),
                                     scheduled_execution_time=datetime(2026, 11, 26, 2, tzinfo=timezone.utc))
    requests = nightly(context)
    assert {(r.partition_key, r.tags["reason"]) for r in requests} == {("s0.tar", "stale alignment_levels")}
