"""raw_pairs through Dagster: partitions, the reconcile check, the warehouse, idempotency, the sensor."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import duckdb
import polars as pl
from dagster import build_sensor_context

from caption_assets.definitions import build_definitions
from caption_assets.sensors import crawl_sensor
from resources import CrawlSource, DuplicateIndex, QualityWarehouse
from tests.helpers import noise_image, wds_members, write_tar


def materialize(defs, instance, shard: str):
    instance.add_dynamic_partitions("shards", [shard])
    return defs.resolve_job_def("ingest_shard").execute_in_process(partition_key=shard, instance=instance)


def check_result(result, name: str):
    evals = [e.event_specific_data for e in result.all_events if e.event_type_value == "ASSET_CHECK_EVALUATION"]
    return next(e for e in evals if e.check_name == name)


def test_materialize_reconcile_and_warehouse(tmp_path: Path, settings_for, instance):
    crawl = tmp_path / "crawl"
    crawl.mkdir()
    write_tar(crawl / "s1.tar", wds_members(7) + [("bad.jpg", b"nope"), ("bad.txt", b"x"), ("dup.jpg", noise_image(1)), ("dup.txt", b"IMG_0001.jpg")])
    settings = settings_for(crawl)
    defs = build_definitions(settings)
    result = materialize(defs, instance, "s1.tar")
    assert result.success
    check = check_result(result, "raw_pairs_reconcile")
    assert check.passed and check.metadata["seen"].value == 9
    mat = result.asset_materializations_for_node("raw_pairs")[0]
    assert mat.metadata["dagster/row_count"].value == 8 and mat.metadata["quarantined"].value == 1
    assert "duplicate_image" in mat.metadata["flags_by_reason"].value and "boilerplate_caption" in mat.metadata["flags_by_reason"].value

    wh = QualityWarehouse(path=str(settings.warehouse_path))
    funnel = {(o, r): n for _, _, o, r, n in wh.funnel("raw_pairs").iter_rows()}
    assert funnel == {("in", None): 9, ("passed", None): 7, ("flagged", "duplicate_image"): 1, ("quarantined", "not_an_image"): 1}
    assert wh.query("SELECT key, reason FROM quarantine").rows() == [("bad", "not_an_image")]

    out = settings.lake_dir / "raw_pairs" / "s1.tar.parquet"
    first = hashlib.sha256(out.read_bytes()).hexdigest()
    assert materialize(defs, instance, "s1.tar").success  # idempotent re-run
    assert hashlib.sha256(out.read_bytes()).hexdigest() == first
    assert wh.query("SELECT count(*) FROM funnel").item() == 4
    assert wh.query("SELECT count(*) FROM quarantine").item() == 1
    # the step wrote parquet rows only: it never opened (or locked) the DuckDB file, so it may run on any machine
    assert not settings.warehouse_path.exists() and not Path(str(settings.warehouse_path) + ".lock").exists()
    written = [p.relative_to(wh.rows) for p in wh.rows.rglob("*.parquet") if "__schema__" not in p.as_posix() and p.name != "_compacted.parquet"]
    assert sorted({p.parent.as_posix() for p in written}) == [f"{t}/stage=raw_pairs/partition=s1.tar" for t in ("funnel", "quarantine")]
    # the daemon's compaction sensor (or the CLI) folds them into one file per table and writes the views a person opens
    skip = defs.resolve_sensor_def("warehouse_compaction")(build_sensor_context(instance=instance, resources={"warehouse": wh}))
    assert skip.skip_message == "compacted 4 row files; 0 written since", skip.skip_message
    assert wh.file_count() == 0 and wh.funnel("raw_pairs").height == 4 and wh.partition_rows("quarantine", "raw_pairs", "s1.tar")["key"].to_list() == ["bad"]
    con = duckdb.connect(str(settings.warehouse_path), read_only=True)
    assert con.execute("SELECT sum(count) FROM funnel WHERE outcome = 'in'").fetchone() == (9,)
    assert con.execute("SELECT table_name FROM duckdb_tables()").fetchall() == []
    con.close()


def test_cross_shard_duplicates_are_flagged_in_the_later_shard(tmp_path: Path, settings_for, instance):
    crawl = tmp_path / "crawl"
    crawl.mkdir()
    write_tar(crawl / "a.tar", wds_members(3))
    write_tar(crawl / "b.tar", wds_members(2, start=2))  # sample 2's image is also in a.tar
    defs = build_definitions(settings_for(crawl))
    assert materialize(defs, instance, "a.tar").success and materialize(defs, instance, "b.tar").success
    b = pl.read_parquet(settings_for(crawl).lake_dir / "raw_pairs" / "b.tar.parquet")
    assert b.filter(pl.col("primary_flag") == "duplicate_image")["key"].to_list() == ["00002"]


def test_missing_shard_fails_the_run_with_a_reason(tmp_path: Path, settings_for, instance):
    crawl = tmp_path / "crawl"
    crawl.mkdir()
    defs = build_definitions(settings_for(crawl))
    instance.add_dynamic_partitions("shards", ["gone.tar"])
    result = defs.resolve_job_def("ingest_shard").execute_in_process(partition_key="gone.tar", instance=instance, raise_on_error=False)
    assert not result.success
    failure = next(e for e in result.all_events if e.event_type_value == "STEP_FAILURE")
    assert "not in the crawl folder" in str(failure.event_specific_data.error.message)


def test_sensor_registers_each_new_shard_once(tmp_path: Path, instance):
    crawl = tmp_path / "crawl"
    crawl.mkdir()
    write_tar(crawl / "a.tar", wds_members(1))
    (crawl / "m.jsonl").write_text(json.dumps({"image_path": "x.jpg", "caption": "c"}) + "\n")
    resources = {"crawl": CrawlSource(crawl_dir=str(crawl)), "duplicates": DuplicateIndex(path=str(tmp_path / "index.sqlite"))}

    def tick(cursor=None):
        ctx = build_sensor_context(instance=instance, cursor=cursor, resources=resources)
        result = crawl_sensor(ctx)
        for req in result.dynamic_partitions_requests:
            instance.add_dynamic_partitions(req.partitions_def_name, list(req.partition_keys))
        return result, result.cursor

    r1, cursor = tick()
    assert sorted(r.partition_key for r in r1.run_requests) == ["a.tar", "m.jsonl"]
    assert sorted(instance.get_dynamic_partitions("shards")) == ["a.tar", "m.jsonl"]
    r2, cursor = tick(cursor)
    assert r2.run_requests == [] and r2.dynamic_partitions_requests == []
    write_tar(crawl / "b.tar", wds_members(1))
    r3, cursor = tick(cursor)
    assert [r.partition_key for r in r3.run_requests] == ["b.tar"]
    assert sorted(instance.get_dynamic_partitions("shards")) == ["a.tar", "b.tar", "m.jsonl"]
