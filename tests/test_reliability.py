"""Reliability: hostile corpus end to end, crash and resume, concurrent runs, model failures."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import polars as pl
import torch

from caption_assets.cli import INSTANCE_YAML
from caption_assets.definitions import build_definitions
from caption_assets.settings import PROJECT_ROOT
from resources import QualityWarehouse
from tests.helpers import hostile_crawl, image_bytes, noise_image, wds_members, write_tar


def test_hostile_corpus_every_reason_every_shard_reconciles(tmp_path: Path, settings_for, instance):
    crawl = tmp_path / "crawl"
    crawl.mkdir()
    planted = hostile_crawl(crawl)
    expected: dict[str, set[str]] = {}
    for shard, _, reason in planted:
        expected.setdefault(shard, set()).update({reason} - {None})
    expected["empty.tar"] = set()
    settings = settings_for(crawl)
    defs = build_definitions(settings)
    instance.add_dynamic_partitions("shards", sorted(expected))
    for shard in sorted(expected):
        result = defs.resolve_job_def("ingest_shard").execute_in_process(partition_key=shard, instance=instance)
        assert result.success, shard
        check = next(e.event_specific_data for e in result.all_events if e.event_type_value == "ASSET_CHECK_EVALUATION")
        assert check.passed, shard
    q = QualityWarehouse(path=str(settings.warehouse_path)).query("SELECT partition, reason FROM quarantine")
    for shard, reasons in expected.items():
        assert set(q.filter(pl.col("partition") == shard)["reason"]) == reasons, shard
    a = pl.read_parquet(settings.lake_dir / "raw_pairs" / "a.tar.parquet")
    assert a.filter(pl.col("key") == "h1")["caption"].to_list() == ["Café & bar"]
    assert not any(p.name.startswith(("evil", "escape")) for p in tmp_path.rglob("*"))  # nothing written outside


def test_crash_mid_partition_leaves_nothing_visible_and_resume_matches(tmp_path: Path, settings_for, instance, monkeypatch):
    import resources.clip as clip_mod

    crawl = tmp_path / "crawl"
    crawl.mkdir()
    members = []
    for i in range(150):  # three batches of the demo scorer (64)
        members += [(f"{i:03d}.jpg", noise_image(100 + i)), (f"{i:03d}.txt", f"texture number {i}".encode())]
    write_tar(crawl / "s.tar", members)
    settings = settings_for(crawl)
    defs = build_definitions(settings)
    instance.add_dynamic_partitions("shards", ["s.tar"])
    assert defs.resolve_job_def("ingest_shard").execute_in_process(partition_key="s.tar", instance=instance).success
    assert defs.resolve_job_def("compute_alignment_levels").execute_in_process(instance=instance).success

    calls = {"n": 0}
    real_run = clip_mod.ClipScorer._run

    def failing_run(self, fn, batch):
        calls["n"] += 1
        if calls["n"] > 2:  # die after two batches, in the middle of the partition
            raise RuntimeError("simulated crash")
        return real_run(self, fn, batch)

    monkeypatch.setattr(clip_mod.ClipScorer, "_run", failing_run)
    crashed = defs.resolve_job_def("shard_models").execute_in_process(partition_key="s.tar", instance=instance, raise_on_error=False)
    assert not crashed.success
    out = settings.lake_dir / "scored_pairs"
    assert calls["n"] == 3  # it died in scored_pairs, on the second batch
    assert not out.exists() or not [p for p in out.iterdir()]  # no output, not even a temporary file
    wh = QualityWarehouse(path=str(settings.warehouse_path))
    assert wh.query("SELECT count(*) FROM funnel WHERE stage = 'scored_pairs'").item() == 0

    monkeypatch.setattr(clip_mod.ClipScorer, "_run", real_run)
    assert defs.resolve_job_def("shard_models").execute_in_process(partition_key="s.tar", instance=instance).success
    resumed = pl.read_parquet(out / "s.tar.parquet")
    first = resumed.drop("clip_score")
    assert defs.resolve_job_def("shard_models").execute_in_process(partition_key="s.tar", instance=instance).success
    again = pl.read_parquet(out / "s.tar.parquet")
    assert first.equals(again.drop("clip_score")) and np.allclose(resumed["clip_score"], again["clip_score"], atol=1e-6)
    assert resumed.height == 150


# Loaded by every Python process of the run (CLI, code server, run worker) through PYTHONPATH: ingest slows
# down and says how far it got in a file, so the test can kill the whole process group mid-shard.
SLOW_INGEST = textwrap.dedent('''
    import os
    if os.environ.get("SLOW_INGEST_MARK"):
        import time
        from pathlib import Path
        import caption_assets.ingest as ingest
        import caption_assets.readers as readers
        real = readers.iter_records
        def slow(path):
            for i, rec in enumerate(real(path)):
                if i and i % 50 == 0:
                    Path(os.environ["SLOW_INGEST_MARK"]).write_text(str(i))
                    time.sleep(0.2)
                yield rec
        readers.iter_records = ingest.iter_records = slow
''')


def test_killed_process_leaves_no_half_written_output(tmp_path: Path):
    """SIGKILL to the CLI and every process it started (code server, run worker) in the middle of a shard."""
    crawl, out, hook, mark = tmp_path / "crawl", tmp_path / "out", tmp_path / "hook", tmp_path / "progress"
    crawl.mkdir()
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(SLOW_INGEST)
    members = []
    for i in range(300):
        members += [(f"{i:04d}.jpg", image_bytes(size=(32, 32), seed=i + 1)), (f"{i:04d}.txt", f"tiny square {i}".encode())]
    write_tar(crawl / "big.tar", members)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CAPTION_ASSETS_", "DAGSTER_HOME"))}
    slow_env = {**env, "PYTHONPATH": os.pathsep.join([str(hook), str(PROJECT_ROOT)]), "SLOW_INGEST_MARK": str(mark)}
    proc = subprocess.Popen([sys.executable, "-m", "caption_assets.cli", "run", "--crawl", str(crawl), "--out", str(out)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=slow_env, start_new_session=True, cwd=PROJECT_ROOT)
    deadline = time.monotonic() + 240
    while not (mark.exists() and mark.read_text() and int(mark.read_text()) >= 100):
        assert proc.poll() is None and time.monotonic() < deadline, "the run ended before ingest got to record 100"
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    lake = out / "lake"
    assert not list(lake.rglob("*.parquet"))  # nothing half-written under a name a reader would open
    done = subprocess.run([sys.executable, "-m", "caption_assets.cli", "run", "--crawl", str(crawl), "--out", str(out)], env=env, capture_output=True, text=True, timeout=600, cwd=PROJECT_ROOT)
    assert done.returncode == 0, done.stderr[-2000:]
    assert pl.read_parquet(lake / "raw_pairs" / "big.tar.parquet").height == 300


def _write_partition(args: tuple[str, str, int]) -> int:
    path, partition, rounds = args
    wh = QualityWarehouse(path=path)
    for r in range(rounds):
        n = 100 + r
        wh.replace_partition("raw_pairs", partition, [("in", None, n), ("passed", None, n - 3), ("quarantined", "empty_image", 3)], None, f"run-{r}")
    return rounds


def _read_consistent(args: tuple[str, int]) -> int:
    """Inconsistent reads: a partition whose rows do not reconcile, a row seen twice, or a partition that vanished
    after it was seen (what a compaction racing a reader could do)."""
    path, rounds = args
    wh = QualityWarehouse(path=path)
    bad, seen = 0, set()
    for _ in range(rounds):
        f = wh.query("SELECT partition, outcome, sum(count) AS n, count(*) AS rows FROM funnel GROUP BY ALL")
        bad += f.filter(pl.col("rows") > 1).height
        for p in f["partition"].unique():
            rows = dict(f.filter(pl.col("partition") == p).select("outcome", "n").iter_rows())
            bad += rows.get("in", 0) != rows.get("passed", 0) + rows.get("quarantined", 0)
        now = set(f["partition"])
        bad += len(seen - now)
        seen |= now
    return bad


def _compact(args: tuple[str, int]) -> int:
    path, rounds = args
    wh = QualityWarehouse(path=path)
    for _ in range(rounds):
        wh.publish()
    return rounds


def test_concurrent_writers_never_corrupt_the_warehouse(tmp_path: Path):
    path = str(tmp_path / "wh.duckdb")
    import multiprocessing

    # spawn, not fork: a forked child inherits the parent's DuckDB threads and locks
    with ProcessPoolExecutor(5, mp_context=multiprocessing.get_context("spawn")) as pool:
        writers = [pool.submit(_write_partition, (path, f"shard-{i}", 30)) for i in range(3)]
        compactor = pool.submit(_compact, (path, 6))  # the CLI compacting while steps write and checks read
        reader = pool.submit(_read_consistent, (path, 20))
        assert [w.result() for w in writers] == [30, 30, 30] and compactor.result() == 6
        assert reader.result() == 0  # readers never saw a half-replaced, doubled or vanished partition
    wh = QualityWarehouse(path=path)
    f = wh.funnel()
    assert f.height == 9 and set(f.filter(pl.col("outcome") == "in")["count"]) == {129}
    wh.publish()
    assert wh.file_count() == 0 and wh.funnel().equals(f)


def test_warehouse_rows_replace_per_partition_and_an_old_table_file_is_kept_aside(tmp_path: Path):
    import duckdb

    old = tmp_path / "wh.duckdb"  # a warehouse written before the rows moved to parquet: tables, not views
    con = duckdb.connect(str(old))
    con.execute("CREATE TABLE funnel (partition VARCHAR, count BIGINT); INSERT INTO funnel VALUES ('x', 1)")
    con.close()
    wh = QualityWarehouse(path=str(old))
    odd = "crawl 2/part=1%.tar"  # a shard key with a space, a slash, '=' and '%': one partition, read back as written
    q = tmp_path / "q.parquet"
    pl.DataFrame({"stage": ["raw_pairs"], "key": ["k"], "reason": ["not_an_image"]}).write_parquet(q)  # no member/message columns
    wh.replace_partition("raw_pairs", odd, [("in", None, 4), ("quarantined", "not_an_image", 1)], q, "r1")
    wh.replace_partition("raw_pairs", odd, [("in", None, 5)], None, "r2")  # replaces: the quarantine row goes too
    wh.replace_partition("scored_pairs", odd, [("in", None, 5)], None, "r2")
    assert wh.funnel().rows() == [(odd, "raw_pairs", "in", None, 5), (odd, "scored_pairs", "in", None, 5)]
    assert wh.query("SELECT count(*) FROM quarantine").item() == 0
    wh.publish()
    (aside,) = tmp_path.glob("wh.tables-*.duckdb")
    assert duckdb.connect(str(aside), read_only=True).execute("SELECT * FROM funnel").fetchall() == [("x", 1)]
    reader = duckdb.connect(str(old), read_only=True)  # a person's session, held open
    assert reader.execute("SELECT partition, count FROM funnel WHERE stage = 'raw_pairs'").fetchall() == [(odd, 5)]
    written = old.stat().st_mtime_ns
    wh.replace_partition("raw_pairs", "b.tar", [("in", None, 2)], None, "r3")
    wh.replace_partition("raw_pairs", "b__schema__.tar", [("in", None, 1)], None, "r3")  # named like the seed key, still a shard
    wh.publish()  # compacts; the views are already right, so the file is not rewritten and the open session is no obstacle
    assert old.stat().st_mtime_ns == written and wh.file_count() == 0
    expected = [("b.tar", 2), ("b__schema__.tar", 1), (odd, 5)]
    assert reader.execute("SELECT partition, count FROM funnel WHERE stage = 'raw_pairs' ORDER BY 1").fetchall() == expected
    assert wh.query("SELECT partition, count FROM funnel WHERE stage = 'raw_pairs' ORDER BY 1").rows() == expected
    assert wh.partition_rows("funnel", "raw_pairs", "b__schema__.tar")["count"].to_list() == [1]
    reader.close()


def test_two_partitions_in_parallel_with_the_multiprocess_executor(tmp_path: Path):
    crawl, home = tmp_path / "crawl", tmp_path / "home"
    crawl.mkdir()
    home.mkdir()
    (home / "dagster.yaml").write_text(INSTANCE_YAML)
    # distinct images per shard: with shared ones, q.tar's cross-shard duplicate flag would depend on which run wrote first
    for start, s in ((0, "p.tar"), (100, "q.tar")):
        write_tar(crawl / s, wds_members(30, start=start, prefix=s[0]))
    env = {**os.environ, "DAGSTER_HOME": str(home), "CAPTION_ASSETS_CRAWL_DIR": str(crawl), "CAPTION_ASSETS_DATA_DIR": str(tmp_path / "data"), "CAPTION_ASSETS_PROFILE": "demo",
           "CAPTION_ASSETS_EXECUTOR": "multiprocess"}
    from dagster import DagsterInstance

    with DagsterInstance.from_config(str(home)) as inst:
        inst.add_dynamic_partitions("shards", ["p.tar", "q.tar"])
    cmd = [sys.executable, "-m", "dagster", "asset", "materialize", "-m", "caption_assets.definitions", "--select", "raw_pairs", "--partition"]
    procs = [subprocess.Popen([*cmd, s], env=env, cwd=PROJECT_ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for s in ("p.tar", "q.tar")]
    outs = [p.communicate(timeout=300)[0] for p in procs]
    assert all(p.returncode == 0 for p in procs), outs[0][-2000:] + outs[1][-2000:]
    assert all("multiprocess" in o or "Launching subprocess" in o or "Executing steps using multiprocess executor" in o for o in outs)
    wh = QualityWarehouse(path=str(tmp_path / "data" / "warehouse.duckdb"))
    f = wh.funnel("raw_pairs")
    assert dict(f.filter(pl.col("outcome") == "in").select("partition", "count").iter_rows()) == {"p.tar": 30, "q.tar": 30}
    assert f.height == 4  # in + passed per partition, no duplicates


def test_out_of_memory_batches_are_split_and_nothing_is_lost():
    from resources.clip import ClipScorer

    scorer = ClipScorer(model_name="demo-tiny-clip", pretrained="demo")
    seen = []

    def flaky(batch: torch.Tensor) -> torch.Tensor:
        seen.append(len(batch))
        if len(batch) > 3:
            raise torch.OutOfMemoryError("CUDA out of memory (simulated)")
        return batch.float()

    batch = torch.randn(10, 4)
    out = scorer._run(flaky, batch)
    assert out.shape == (10, 4)
    assert np.allclose(out, torch.nn.functional.normalize(batch, dim=-1).numpy(), atol=1e-6)
    assert seen[0] == 10 and max(seen[1:]) <= 5 and sum(s for s in seen if s <= 3) == 10


def test_a_report_part_that_cannot_be_drawn_is_a_note_in_its_place(tmp_path: Path):
    """An export whose fused rows are gone (no saved plots to fall back on): the distributions say why,
    every other part of the page is still drawn, and the caller hears which part failed."""
    from caption_assets.assets.compressed import build_report, export_dir
    from resources import LakeStorage

    lake = LakeStorage(root=str(tmp_path / "lake"))
    export_dir(lake).mkdir(parents=True)
    pl.DataFrame({"uid": ["s.tar::0001"], "shard": ["s.tar"], "cluster": [0], "selection_score": [0.5], "selected": [True], "drop_reason": [None]},
                 schema_overrides={"drop_reason": pl.String}).write_parquet(export_dir(lake) / "selection.parquet")
    problems: list[str] = []
    page = build_report(lake, QualityWarehouse(path=str(tmp_path / "wh.duckdb")), problems=problems)
    assert problems == ["distributions: Failure: nothing to compress: no fused_captions partition is materialized yet"]
    assert 'The distributions could not be drawn (Failure: nothing to compress' in page
    assert page.count("could not be drawn") == 1
    assert '<div class="card" data-outcome="selected">' in page and "<h2>Funnel (all stages, all shards)</h2><table>" in page
