"""The console script: exit codes, runs recorded in DAGSTER_HOME, the funnel report."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from dagster import DagsterInstance

from caption_assets.cli import visible_gpus

from tests.helpers import wds_members, write_tar


def cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "caption_assets.cli", *args], capture_output=True, text=True, env=env, timeout=300)


def test_run_report_and_failures(tmp_path: Path):
    crawl, out = tmp_path / "crawl", tmp_path / "out"
    crawl.mkdir()
    write_tar(crawl / "a.tar", wds_members(4) + [("x.jpg", b""), ("x.txt", b"zero")])
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CAPTION_ASSETS_", "DAGSTER_HOME"))}
    done = cli("run", "--crawl", str(crawl), "--out", str(out), "--executor", "multiprocess", env=env)
    assert done.returncode == 0, done.stderr
    lines = [line.split() for line in done.stdout.splitlines() if line.strip()]
    launched = [line[1:3] if len(line) > 2 and line[2] != "all" else line[1:2] for line in lines if line[0] == "ok"]
    assert launched == [["ingest_shard", "a.tar"], ["shared_models"], ["shard_models", "a.tar"], ["compress_dataset"]], done.stdout
    assert "executor multiprocess" in done.stdout
    assert str(out / "warehouse.duckdb") in done.stdout
    home = out / "dagster_home"
    with DagsterInstance.from_config(str(home)) as instance:
        assert instance.get_dynamic_partitions("shards") == ["a.tar"]
        runs = {r.dagster_run.job_name: r.dagster_run for r in instance.get_run_records()}
        assert sorted(runs) == ["compress_dataset", "ingest_shard", "shard_models", "shared_models"]
        for run in runs.values():  # launched through the instance: its run launcher recorded the code server it used
            assert run.tags["caption_assets/launched_by"] == "cli" and ".dagster/grpc_info" in run.tags, run.tags
        assert runs["shard_models"].tags["dagster/partition"] == "a.tar" and "dagster/partition" not in runs["compress_dataset"].tags
        # the configured executor ran the steps: one process per step, the model steps in the "gpu" pool
        events = [e.dagster_event for e in instance.all_logs(runs["shard_models"].run_id) if e.dagster_event]
        started = {e.step_key for e in events if e.event_type_value == "STEP_WORKER_STARTED"}
        assert started == {"scored_pairs", "recaptioned_pairs", "vision_expert_tags", "fused_captions"}, started
        assert any("multiprocess executor" in (e.message or "") for e in events)
        # the CLI's own instance: the model-step pool admits one step per GPU, or, on a CPU-only host, one per run in flight
        assert instance.event_log_storage.get_concurrency_info("gpu").slot_count == (visible_gpus() or 2)

    report = cli("report", "--out", str(out), env=env)
    assert report.returncode == 0 and "empty_image" in report.stdout

    missing = cli("run", "--crawl", str(tmp_path / "nope"), "--out", str(out), env=env)
    assert missing.returncode == 2 and missing.stderr.strip().count("\n") == 0 and "does not exist" in missing.stderr
    bad_profile = cli("report", env={**env, "CAPTION_ASSETS_PROFILE": "staging"})
    assert bad_profile.returncode == 2 and "CAPTION_ASSETS_PROFILE" in bad_profile.stderr


@pytest.mark.parametrize(("visible", "count"), [("0,1", 2), ("3", 1), ("", 0), ("-1", 0)])
def test_visible_gpus_follow_cuda_visible_devices(monkeypatch, visible, count):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", visible)
    assert visible_gpus() == count
