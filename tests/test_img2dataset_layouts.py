"""img2dataset's three output layouts, as img2dataset 1.47 itself wrote them (tests/fixtures/img2dataset/make.py).

Each layout holds the same 12 urls in two shards of six: 9 downloads, a 404, an html page served as
a jpg (img2dataset: failed_to_resize) and a refused connection. Shard 00001 also holds a byte copy of
shard 00000's first image and a re-encode of its second.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import polars as pl
import pytest

from caption_assets.definitions import build_definitions
from caption_assets.duplicate_index import ImageIndex
from caption_assets.ingest import ingest_shard
from caption_assets.shards import ShardKind, discover_shards, read_stats, shard_kind
from caption_assets.sensors import crawl_sensor
from resources import CrawlSource, DuplicateIndex

FIXTURES = Path(__file__).parent / "fixtures" / "img2dataset"
LAYOUTS = {  # layout -> (shard keys, kind)
    "webdataset": (["00000.tar", "00001.tar"], ShardKind.TAR),
    "files": (["00000", "00001"], ShardKind.FOLDER),
    "parquet": (["00000.parquet", "00001.parquet"], ShardKind.IMG2DATASET_PARQUET),
}
FAILED = {  # shard index -> (key, img2dataset's message)
    0: [("000002", "HTTP Error 404: File not found"), ("000004", "Image decoding error")],
    1: [("000012", "Connection refused")],
}


@pytest.mark.parametrize("layout", LAYOUTS)
def test_sidecars_are_metadata_not_shards(layout: str):
    keys, kind = LAYOUTS[layout]
    assert discover_shards(FIXTURES / layout) == keys
    assert all(shard_kind(FIXTURES / layout / k) is kind for k in keys)


@pytest.mark.parametrize("layout", LAYOUTS)
def test_failed_urls_are_quarantined_in_their_own_shard_and_every_url_row_reconciles(layout: str, tmp_path: Path):
    keys, _ = LAYOUTS[layout]
    index = ImageIndex(tmp_path / "index.sqlite")
    for i, key in enumerate(keys):
        path = FIXTURES / layout / key
        result = ingest_shard(path, key, duplicates=lambda rows, key=key: index.update(key, rows).verdicts)
        url_rows = read_stats(path)["count"]
        assert url_rows == 6 and result.seen == url_rows == result.pairs.height + result.quarantine.height
        q = result.quarantine.sort("key")
        assert q["shard"].unique().to_list() == [key]
        assert q["reason"].unique().to_list() == ["download_failed"]
        assert [(k, expected in msg) for k, msg, (_, expected) in zip(q["key"], q["message"], FAILED[i])] == [(k, True) for k, _ in FAILED[i]]
        assert result.pairs["url"].str.starts_with("http://127.0.0.1:").all()
        assert result.pairs["caption"].null_count() == 0
    # the byte copy is an exact duplicate of shard 0's first image, the re-encode a verified copy
    second = result.pairs.filter(pl.col("duplicate_kind").is_not_null()).select("key", "duplicate_of", "duplicate_kind").sort("key")
    assert second.rows() == [("000011", f"{keys[0]}::000000", "exact"), ("000013", f"{keys[0]}::000001", "copy")]


def test_files_layout_through_the_sensor_and_the_asset_check(tmp_path: Path, settings_for, instance):
    crawl = tmp_path / "crawl"
    shutil.copytree(FIXTURES / "files", crawl)
    defs = build_definitions(settings_for(crawl))
    settings = settings_for(crawl)
    resources = {"crawl": CrawlSource(crawl_dir=str(crawl)), "duplicates": DuplicateIndex(path=str(settings.duplicate_index_path))}
    from dagster import build_sensor_context

    tick = crawl_sensor(build_sensor_context(instance=instance, resources=resources))
    assert sorted(r.partition_key for r in tick.run_requests) == ["00000", "00001"]
    for req in tick.dynamic_partitions_requests:
        instance.add_dynamic_partitions(req.partitions_def_name, list(req.partition_keys))
    result = defs.resolve_job_def("ingest_shard").execute_in_process(partition_key="00000", instance=instance)
    check = next(e.event_specific_data for e in result.all_events if e.event_type_value == "ASSET_CHECK_EVALUATION")
    assert check.passed and check.metadata["img2dataset_url_rows"].value == 6 and check.metadata["quarantined"].value == 2
    meta = result.asset_materializations_for_node("raw_pairs")[0].metadata
    assert meta["img2dataset_stats"].value == {"count": 6, "successes": 4, "failed_to_download": 1, "failed_to_resize": 1}

    # a sidecar rewritten in place (img2dataset re-run) is a change of that shard, and only of that shard
    sidecar = crawl / "00001.parquet"
    sidecar.write_bytes(sidecar.read_bytes())
    later = crawl_sensor(build_sensor_context(instance=instance, cursor=tick.cursor, resources=resources))
    assert [r.partition_key for r in later.run_requests] == ["00001"]


def test_a_sample_missing_from_the_shard_is_named_and_the_check_fails_on_a_short_count(tmp_path: Path, settings_for, instance):
    crawl = tmp_path / "crawl"
    shutil.copytree(FIXTURES / "files", crawl)
    for f in (crawl / "00000").glob("000003.*"):
        f.unlink()  # img2dataset says success, the file is gone
    result = ingest_shard(crawl / "00000", "00000")
    missing = result.quarantine.filter(pl.col("key") == "000003")
    assert missing["reason"].to_list() == ["missing_image"] and "00000.parquet" in missing["message"][0]
    assert result.seen == 6

    (crawl / "00000_stats.json").write_text('{"count": 7, "successes": 5}')  # stats that disagree with the url rows
    defs = build_definitions(settings_for(crawl))
    instance.add_dynamic_partitions("shards", ["00000"])
    run = defs.resolve_job_def("ingest_shard").execute_in_process(partition_key="00000", instance=instance, raise_on_error=False)
    check = next(e.event_specific_data for e in run.all_events if e.event_type_value == "ASSET_CHECK_EVALUATION")
    assert not check.passed and check.metadata["seen"].value == 6 and check.metadata["img2dataset_url_rows"].value == 7
