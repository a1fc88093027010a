"""The console script: exit codes, runs recorded in DAGSTER_HOME, the funnel report."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from dagster import DagsterInstance

from tests.helpers import wds_members, write_tar


def cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "caption_assets.cli", *args], capture_output=True, text=True, env=env, timeout=300)


def test_run_report_and_failures(tmp_path: Path):
    crawl, out = tmp_path / "crawl", tmp_path / "out"
    crawl.mkdir()
    write_tar(crawl / "a.tar", wds_members(4) + [("x.jpg", b""), ("x.txt", b"zero")])
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CAPTION_ASSETS_", "DAGSTER_HOME"))}
    done = cli("run", "--crawl", str(crawl), "--out", str(out), env=env)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert any(line.split()[:3] == ["ok", "ingest_shard", "a.tar"] for line in lines if line.strip())
    assert any(line.split()[:3] == ["ok", "shard_models", "a.tar"] for line in lines if line.strip())
    assert str(out / "warehouse.duckdb") in done.stdout
    home = out / "dagster_home"
    with DagsterInstance.from_config(str(home)) as instance:
        assert instance.get_dynamic_partitions("shards") == ["a.tar"]
        assert len(instance.get_run_records()) >= 1  # the run is in the instance the UI reads

    report = cli("report", "--out", str(out), env=env)
    assert report.returncode == 0 and "empty_image" in report.stdout

    missing = cli("run", "--crawl", str(tmp_path / "nope"), "--out", str(out), env=env)
    assert missing.returncode == 2 and missing.stderr.strip().count("\n") == 0 and "does not exist" in missing.stderr
    bad_profile = cli("report", env={**env, "CAPTION_ASSETS_PROFILE": "staging"})
    assert bad_profile.returncode == 2 and "CAPTION_ASSETS_PROFILE" in bad_profile.stderr
