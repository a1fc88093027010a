"""What a step costs on a Ray cluster next to the local multiprocess executor, measured in one run.

    python bench/cluster.py [--pairs 40]

Starts a throwaway local cluster (PostgreSQL + a Ray head and one worker node, ``caption_assets/cluster.py``,
ports away from the defaults), runs the chain on one world shard of ``--pairs`` pairs with
``--executor ray`` and with ``--executor multiprocess``, and reads each step's events back from the instance:

- launch: the executor hands the step over -> the step's process reports in (Ray: job submission, the job
  supervisor, the entrypoint's interpreter; multiprocess: a fork from the preloaded forkserver)
- start: hand-over -> the step's code starts (launch + imports + resource init, e.g. loading the models)
- compute: the step's code, start to success

Per-step overhead = start; the difference between the executors is what Ray adds per step, and the shard
size that amortises it follows from the model steps' compute per pair.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
REPORTS_IN = {"STEP_WORKER_STARTED", "RESOURCE_INIT_STARTED", "LOGS_CAPTURED", "STEP_START"}  # the step's process speaking
MODEL_STEPS = {"alignment_levels", "alignment_reward_model", "scored_pairs", "recaptioned_pairs", "vision_expert_tags", "fused_captions"}


def step_times(home: Path) -> list[dict]:
    """One row per step of every run in the instance at ``home``: launch, start and compute seconds."""
    from dagster import DagsterInstance

    rows = []
    with DagsterInstance.from_config(str(home)) as instance:
        for record in instance.get_run_records():
            first: dict[tuple[str, str], float] = {}
            for e in instance.all_logs(record.dagster_run.run_id):
                if e.dagster_event and e.step_key:
                    first.setdefault((e.step_key, e.dagster_event.event_type_value), e.timestamp)
            for step in {s for s, _ in first}:
                handed = first.get((step, "STEP_WORKER_STARTING"))
                reported = min((t for (s, k), t in first.items() if s == step and k in REPORTS_IN), default=None)
                start, done = first.get((step, "STEP_START")), first.get((step, "STEP_SUCCESS"))
                if handed and reported and start and done:
                    rows.append({"step": step, "model": step in MODEL_STEPS, "launch": reported - handed, "start": start - handed, "compute": done - start})
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pairs", type=int, default=40)
    args = ap.parse_args()
    from caption_assets.cluster import ClusterSpec, down, up
    from caption_assets.world.crawl import CrawlSpec, shard_plan, write_crawl

    tmp = Path(tempfile.mkdtemp(prefix="bench-cluster-"))
    crawl, _ = write_crawl(tmp / "world", CrawlSpec(shard_plan(1, args.pairs), seed=4242))
    t0 = time.perf_counter()
    spec = up(ClusterSpec(tmp / "cluster", workers=1, cpus_per_node=1, postgres_port=25434, ray_port=36479, dashboard_port=38365, worker_ports_from=42000))
    print(f"cluster up in {time.perf_counter() - t0:.0f}s", flush=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CAPTION_ASSETS_", "DAGSTER_HOME", "RAY_"))}
    figures, walls = {}, {}
    try:
        for executor in ("ray", "multiprocess"):
            out = tmp / executor
            run_env = {**env, "CAPTION_ASSETS_CLUSTER_DIR": str(spec.root)} if executor == "ray" else env
            t0 = time.perf_counter()
            done = subprocess.run([sys.executable, "-m", "caption_assets.cli", "run", "--executor", executor, "--crawl", str(crawl), "--out", str(out)],
                                  env=run_env, capture_output=True, text=True)
            walls[executor] = time.perf_counter() - t0
            if done.returncode != 0:
                raise SystemExit(f"{executor} run failed:\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}")
            figures[executor] = step_times(spec.home if executor == "ray" else out / "dagster_home")
    finally:
        down(spec, purge=True)

    def med(executor: str, model: bool, key: str) -> float:
        return statistics.median(r[key] for r in figures[executor] if r["model"] == model)

    print(f"\nOne world shard of {args.pairs} pairs, {os.cpu_count()} cores; median seconds per step (steps: "
          f"{len(figures['ray'])} on Ray, {len(figures['multiprocess'])} multiprocess)\n")
    print(f"  {'':28s} {'ray':>8s} {'multiprocess':>13s} {'ray - mp':>9s}")
    for model in (True, False):
        kind = "model steps" if model else "model-free steps"
        for key in ("launch", "start", "compute"):
            r, m = med("ray", model, key), med("multiprocess", model, key)
            print(f"  {kind + ': ' + key:28s} {r:8.2f} {m:13.2f} {r - m:+9.2f}")
    print(f"\n  whole chain (CLI wall time): ray {walls['ray']:.0f}s, multiprocess {walls['multiprocess']:.0f}s")
    rec = [r for r in figures["ray"] if r["step"] == "recaptioned_pairs"]
    if rec:
        per_pair = rec[0]["compute"] / args.pairs
        extra = med("ray", True, "start") - med("multiprocess", True, "start")
        print(f"  recaptioning here: {per_pair * 1000:.0f} ms/pair; Ray's extra {extra:.1f}s per model step is 10% of a step "
              f"of {extra / per_pair * 10:.0f} pairs at this speed (on a GPU doing 300 pairs/s: {extra * 300 * 10:.0f} pairs)")


if __name__ == "__main__":
    main()
