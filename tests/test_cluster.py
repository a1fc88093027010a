"""The chain on a real 2-node Ray cluster (head + one worker node, separate ports and process groups) with the
Dagster instance on PostgreSQL: every step a Ray job, steps on both nodes, the lake and the warehouse as a
multiprocess run leaves them, checks green; a worker node killed mid-step fails the run, and a re-run completes
with no duplicate rows."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import duckdb
import polars as pl
import pytest
from dagster import DagsterInstance

from tests.helpers import wds_members, write_tar

try:
    from caption_assets.cluster import ClusterError, ClusterSpec, down, kill_node, postgres_bin, start_node, up, wait_for_nodes
    postgres_bin("initdb")
    MISSING = next((m for m in ("ray", "dagster_ray", "dagster_postgres") if importlib.util.find_spec(m) is None), None)
except ClusterError as exc:  # no PostgreSQL server binaries
    MISSING = str(exc)

pytestmark = pytest.mark.skipif(MISSING is not None, reason=f"cluster test needs ray, dagster-ray, dagster-postgres, PostgreSQL: {MISSING}")
MODEL_STEPS = {"scored_pairs", "recaptioned_pairs", "vision_expert_tags", "fused_captions"}


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    # ports away from the defaults, so a developer's own `caption-assets cluster up` can keep running
    spec = up(ClusterSpec(tmp_path_factory.mktemp("cluster"), workers=1, cpus_per_node=1, postgres_port=25433,
                          ray_port=36379, dashboard_port=38265, worker_ports_from=40000))
    try:
        yield spec
    finally:
        down(spec, purge=True)


def clean_env(spec: ClusterSpec) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CAPTION_ASSETS_", "DAGSTER_HOME", "RAY_"))}
    return {**env, "CAPTION_ASSETS_CLUSTER_DIR": str(spec.root)}


def cli(*args: str, env: dict[str, str], timeout: int = 600) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "caption_assets.cli", *args], capture_output=True, text=True, env=env, timeout=timeout)


def crawl_of(root: Path, shards: dict[str, int]) -> Path:
    root.mkdir(parents=True)
    for i, (name, n) in enumerate(shards.items()):
        write_tar(root / name, wds_members(n, start=100 * i) + [("broken.jpg", b"not an image"), ("broken.txt", b"a broken one")])
    return root


def lake(out: Path, asset: str) -> pl.DataFrame:
    return pl.read_parquet(str(out / "lake" / asset / "*.parquet"))


def ray_jobs(spec: ClusterSpec) -> list[dict]:
    with urllib.request.urlopen(f"{spec.dashboard}/api/jobs/", timeout=10) as r:
        return json.load(r)


def test_chain_on_two_ray_nodes_with_the_instance_on_postgres(cluster: ClusterSpec, tmp_path: Path):
    crawl = crawl_of(tmp_path / "crawl", {"a.tar": 6})
    env = clean_env(cluster)
    done = cli("run", "--executor", "ray", "--crawl", str(crawl), "--out", str(tmp_path / "ray"), env=env)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "executor ray" in done.stdout and "on head:" in done.stdout and "on worker-1:" in done.stdout, done.stdout

    with DagsterInstance.from_config(str(cluster.home)) as instance:
        assert type(instance.run_storage).__name__ == "PostgresRunStorage"
        runs = [r.dagster_run for r in instance.get_run_records()]
        assert sorted(r.job_name for r in runs) == ["compress_dataset", "ingest_shard", "shard_models", "shared_models"]
        nodes: dict[str, str] = {}
        for run in runs:
            events = [e.dagster_event for e in instance.all_logs(run.run_id) if e.dagster_event]
            succeeded = {e.step_key for e in events if e.event_type_value == "STEP_SUCCESS"}
            # every step was submitted as a Ray job, and recorded on the run the node that ran it
            submitted = {e.step_key: e.event_specific_data.metadata["Ray Submission ID"].text for e in events
                         if e.event_type_value == "STEP_WORKER_STARTING"}
            assert set(submitted) == succeeded and succeeded, run.job_name
            for step in succeeded:
                node, job = run.tags[f"caption_assets/ray/{step}"].split(" ")
                assert job == submitted[step], (step, job)
                nodes[step] = node
            checks = [e for e in events if e.event_type_value == "ASSET_CHECK_EVALUATION"]
            assert all(c.event_specific_data.passed for c in checks)
            if run.job_name == "ingest_shard":
                assert [c.event_specific_data.check_name for c in checks] == ["raw_pairs_reconcile"]
    assert set(nodes.values()) == {"head", "worker-1"}, nodes
    assert nodes["raw_pairs"] == "head"  # the duplicate index's one writer, on the node that has it
    assert MODEL_STEPS <= set(nodes)
    by_id = {j["submission_id"]: j for j in ray_jobs(cluster)}
    assert all(by_id[run.tags[f"caption_assets/ray/{s}"].split(" ")[1]]["status"] == "SUCCEEDED" for s in nodes for run in runs
               if f"caption_assets/ray/{s}" in run.tags)

    # the same crawl through the local multiprocess executor leaves the same lake and funnel
    local = cli("run", "--executor", "multiprocess", "--crawl", str(crawl), "--out", str(tmp_path / "local"), env={
        k: v for k, v in env.items() if k != "CAPTION_ASSETS_CLUSTER_DIR"})
    assert local.returncode == 0, local.stdout + local.stderr
    for asset, columns in {"raw_pairs": None, "scored_pairs": ["uid", "keep", "drop_reason"],
                           "fused_captions": ["uid", "fusion_status", "final_caption"]}.items():
        a, b = (lake(tmp_path / d, asset).sort("uid") for d in ("ray", "local"))
        a, b = (f.select(columns) if columns else f for f in (a, b))
        assert a.equals(b), asset
    funnel = "SELECT stage, partition, outcome, coalesce(reason, '') AS reason, count FROM funnel ORDER BY ALL"
    tables = [duckdb.connect(str(tmp_path / d / "warehouse.duckdb"), read_only=True).sql(funnel).fetchall() for d in ("ray", "local")]
    assert tables[0] == tables[1] and tables[0]
    assert pl.read_parquet(tmp_path / "ray/lake/compressed_dataset/manifest.parquet")["uid"].sort().equals(
        pl.read_parquet(tmp_path / "local/lake/compressed_dataset/manifest.parquet")["uid"].sort())


def test_a_worker_node_killed_mid_step_fails_the_run_and_a_rerun_completes(cluster: ClusterSpec, tmp_path: Path):
    crawl = crawl_of(tmp_path / "crawl", {"b.tar": 5})
    out = tmp_path / "out"
    env = clean_env(cluster)
    workers = {n["node_id"] for n in _nodes(cluster) if not n["is_head_node"]}
    proc = subprocess.Popen([sys.executable, "-m", "caption_assets.cli", "run", "--executor", "ray", "--crawl", str(crawl), "--out", str(out)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    blocker = None
    try:
        # once ingest is done, hold the head's one CPU: every later step has to run on the worker node
        _wait_for(lambda: (out / "lake" / "raw_pairs" / "b.tar.parquet").exists() and _succeeded(cluster, "raw_pairs_raw_pairs_reconcile"), 300)
        blocker = _submit(cluster, "sleep 600", {"num_cpus": 1, "resources": {"duplicate_index": 1}})
        victim = _wait_for(lambda: next((j for j in ray_jobs(cluster) if j["status"] == "RUNNING" and j.get("driver_node_id") in workers
                                          and (j.get("metadata") or {}).get("dagster/op") in MODEL_STEPS | {"alignment_levels", "alignment_reward_model"}), None), 300)
        time.sleep(2)  # mid-step
        kill_node(cluster, "worker-1")
        _stop(cluster, blocker)  # the head takes what is left of the chain
        output, _ = proc.communicate(timeout=420)
    finally:
        if proc.poll() is None:
            proc.kill()
        _stop(cluster, blocker)
    assert proc.returncode == 1, output
    assert "FAILED" in output and victim["metadata"]["dagster/op"] in output, output
    assert "Ray job" in output, output  # the reason names the Ray job that died

    start_node(cluster, 1)
    wait_for_nodes(cluster, 2)
    again = cli("run", "--executor", "ray", "--crawl", str(crawl), "--out", str(out), env=env)
    assert again.returncode == 0, again.stdout + again.stderr
    for asset in ("raw_pairs", "scored_pairs", "recaptioned_pairs", "fused_captions"):
        uids = lake(out, asset)["uid"]
        assert uids.n_unique() == uids.len(), asset
    assert lake(out, "raw_pairs").height == 5
    rows = duckdb.connect(str(out / "warehouse.duckdb"), read_only=True).sql(
        "SELECT stage, partition, outcome, coalesce(reason, ''), count(*) AS n FROM funnel GROUP BY ALL HAVING n > 1").fetchall()
    assert rows == []


def _nodes(spec: ClusterSpec) -> list[dict]:
    from caption_assets.cluster import alive_nodes

    return alive_nodes(spec)


def _succeeded(spec: ClusterSpec, op: str) -> bool:
    return any(j["status"] == "SUCCEEDED" and (j.get("metadata") or {}).get("dagster/op") == op for j in ray_jobs(spec))


def _submit(spec: ClusterSpec, entrypoint: str, needs: dict) -> str:
    from ray.job_submission import JobSubmissionClient

    client = JobSubmissionClient(spec.dashboard)
    return client.submit_job(entrypoint=entrypoint, entrypoint_num_cpus=needs["num_cpus"], entrypoint_resources=needs["resources"])


def _stop(spec: ClusterSpec, job: str | None) -> None:
    if job:
        from ray.job_submission import JobSubmissionClient

        client = JobSubmissionClient(spec.dashboard)
        if not client.get_job_status(job).is_terminal():
            client.stop_job(job)


def _wait_for(probe, timeout_s: float):
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout_s:
        found = probe()
        if found:
            return found
        time.sleep(0.5)
    raise AssertionError(f"timed out after {timeout_s:.0f}s")

