"""``caption-assets``: run the chain, the demo, reports and the UI from a shell.

Runs are launched through the ``DAGSTER_HOME`` instance (its run coordinator and launcher, the configured
executor: ``caption_assets/launch.py``), so a run started here is the run the UI would have started, and
every materialization shows up in the UI with its metadata and checks.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

from caption_assets.settings import EXECUTORS, PROJECT_ROOT, SettingsError

UI_HINT = "DAGSTER_HOME={home} {exe} ui   # then open http://127.0.0.1:3000/asset-groups"


# The local instance: no telemetry; every concurrency pool (the model steps use "gpu") runs one step at a time;
# runs start as they are submitted (the CLI keeps max_concurrent_runs in flight; a deployment's instance
# uses the QueuedRunCoordinator and its daemon instead, and the CLI submits to that queue).
INSTANCE_YAML = """# written by caption-assets (rewritten while this line is here)
telemetry:
  enabled: false
run_coordinator:
  module: dagster._core.run_coordinator
  class: DefaultRunCoordinator
concurrency:
  pools:
    default_limit: 1
"""
OLD_INSTANCE_YAML = """telemetry:
  enabled: false
concurrency:
  pools:
    default_limit: 1
"""
QUIET = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}


class CliError(Exception):
    """A one-line reason the command failed; ``code`` 2 = could not start, 1 = a run failed."""

    def __init__(self, message: str, code: int = 2):
        super().__init__(message)
        self.code = code


def _configure_env(crawl: Path | None, out: Path | None, profile: str | None, executor: str | None = None, max_runs: int | None = None) -> Path:
    """Settings travel to the code server and the run workers as the environment they inherit."""
    if executor is not None:
        os.environ["CAPTION_ASSETS_EXECUTOR"] = executor
    if max_runs is not None:
        os.environ["CAPTION_ASSETS_MAX_CONCURRENT_RUNS"] = str(max_runs)
    if crawl is not None:
        if not crawl.is_dir():
            raise CliError(f"crawl folder {crawl} does not exist or is not a folder")
        os.environ["CAPTION_ASSETS_CRAWL_DIR"] = str(crawl.resolve())
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        os.environ["CAPTION_ASSETS_DATA_DIR"] = str(out.resolve())
    if profile is not None:
        os.environ["CAPTION_ASSETS_PROFILE"] = profile
    from caption_assets.settings import load_settings

    settings = load_settings()
    if settings.executor == "ray" and not os.environ.get("DAGSTER_HOME"):
        return _cluster_env(cluster_dir())
    home = Path(os.environ.get("DAGSTER_HOME") or settings.data_dir / "dagster_home").resolve()
    home.mkdir(parents=True, exist_ok=True)
    config = home / "dagster.yaml"
    if not config.exists() or config.read_text() == OLD_INSTANCE_YAML or config.read_text().startswith(INSTANCE_YAML.splitlines()[0]):
        config.write_text(INSTANCE_YAML)
    os.environ["DAGSTER_HOME"] = str(home)
    return home


def _cli_owns(instance) -> bool:
    """Whether this instance's dagster.yaml is the one the CLI writes (not a deployment's or a cluster's)."""
    config = Path(instance.root_directory) / "dagster.yaml"
    return config.exists() and config.read_text().startswith(INSTANCE_YAML.splitlines()[0])


def visible_gpus() -> int:
    """GPUs this process may use (CUDA_VISIBLE_DEVICES, else the NVIDIA driver's list), without importing torch."""
    env = os.environ.get("CUDA_VISIBLE_DEVICES")
    if env is not None:
        return len([d for d in env.split(",") if d.strip() not in ("", "-1")])
    folder = Path("/proc/driver/nvidia/gpus")
    return len(list(folder.iterdir())) if folder.is_dir() else 0


def cluster_dir(path: Path | None = None) -> Path:
    return (path or Path(os.environ.get("CAPTION_ASSETS_CLUSTER_DIR") or PROJECT_ROOT / "data" / "cluster")).resolve()


def _cluster_env(root: Path) -> Path:
    """Runs on the local cluster (``caption-assets cluster up``): its Postgres-backed instance and its Ray address."""
    from caption_assets.cluster import ClusterError, ClusterSpec, alive_nodes

    try:
        spec = ClusterSpec.load(root)
    except ClusterError as exc:
        raise CliError(f"--executor ray: {exc}, or set DAGSTER_HOME and CAPTION_ASSETS_RAY_ADDRESS for another cluster") from None
    nodes = alive_nodes(spec)
    if not nodes:
        raise CliError(f"--executor ray: the Ray cluster at {spec.dashboard} does not answer (caption-assets cluster up)")
    os.environ.setdefault("CAPTION_ASSETS_RAY_ADDRESS", spec.dashboard)
    if not any(n.get("resources_total", {}).get("GPU") for n in nodes):
        os.environ.setdefault("CAPTION_ASSETS_STEP_GPUS", "0")  # a GPU request would wait forever on this cluster
    from caption_assets.settings import load_settings

    wanted, largest = load_settings().step_cpus, max(n.get("resources_total", {}).get("CPU", 0) for n in nodes)
    if wanted > largest:  # the same: a model step would wait forever for a node that big
        raise CliError(f"model steps ask for {wanted} CPUs (execution.step_cpus / CAPTION_ASSETS_STEP_CPUS) and the largest "
                       f"node of the cluster at {spec.dashboard} has {largest:g}: lower it or `cluster up --cpus-per-node {wanted}`")
    os.environ["DAGSTER_HOME"] = str(spec.home)
    return spec.home


def cluster_command(action: str, root: Path, workers: int, cpus: int) -> None:
    from caption_assets.cluster import ClusterError, ClusterSpec, down, status, up

    try:
        if action == "up":
            try:
                spec = ClusterSpec.load(root)
                spec.workers, spec.cpus_per_node = workers, cpus
            except ClusterError:
                spec = ClusterSpec(root, workers=workers, cpus_per_node=cpus)
            t0 = time.perf_counter()
            spec = up(spec)
            print(f"cluster up in {time.perf_counter() - t0:.0f}s: Postgres {spec.postgres_url}, Ray {spec.dashboard} "
                  f"(head + {spec.workers} worker node(s), {spec.cpus_per_node} CPU each), instance {spec.home}")
            print(f"  run the chain on it:  caption-assets run --executor ray --crawl data/sample/crawl --out {root.parent / 'cluster-run'}")
        elif action == "down":
            down(ClusterSpec.load(root))
            print(f"cluster at {root} stopped")
        else:
            print(json.dumps(status(ClusterSpec.load(root)), indent=2))
    except ClusterError as exc:
        raise CliError(str(exc)) from None


def print_step_nodes(run_id: str) -> None:
    """Which Ray node ran each step of a run (the steps' own ``caption_assets/ray/<step>`` tags)."""
    from dagster import DagsterInstance

    from caption_assets.ray_placement import steps_by_node

    run = DagsterInstance.get().get_run_by_id(run_id)
    for node, steps in steps_by_node(run.tags if run else {}).items():
        print(f"           on {node}: {', '.join(steps)}", flush=True)


def check_ui_can_start(port: int) -> None:
    """One line instead of a traceback from inside dagster dev: a taken port, a DAGSTER_HOME that is not there."""
    import importlib.util
    import socket

    home = os.environ.get("DAGSTER_HOME")
    if home and not Path(home).is_dir():
        raise CliError(f"DAGSTER_HOME={home} does not exist: run `caption-assets demo` first, or use the DAGSTER_HOME it printed")
    if importlib.util.find_spec("dagster_webserver") is None:
        raise CliError(f"dagster-webserver is not installed for {sys.executable} (pip install dagster-webserver)")
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            raise CliError(f"port {port} on 127.0.0.1 is taken (another `dagster dev`?): stop it or pass --port") from None


def run_chain(verbose: bool = True, evaluate: bool = False) -> int:
    """Register every shard as a partition and launch the chain's runs through the instance, stage by stage.

    Each run goes to the instance's run coordinator and launcher and runs on the configured executor
    (``caption_assets/launch.py``); the shards of a stage run concurrently, ``max_concurrent_runs`` at a
    time. Returns the number of failed runs.
    """
    from dagster import DagsterInstance

    from caption_assets.launch import Launcher, Outcome, Request, ingest_until_settled, open_workspace
    from caption_assets.placement import POOL
    from caption_assets.partitions import shards_partitions
    from caption_assets.settings import load_settings
    from caption_assets.shards import discover_shards
    from resources import DuplicateIndex

    settings = load_settings()
    instance = DagsterInstance.get()
    shards = discover_shards(settings.crawl_dir)
    if not shards:
        raise CliError(f"no shards (*.tar, *.parquet, *.csv, *.jsonl) found in {settings.crawl_dir}")
    if _cli_owns(instance):
        # The "gpu" pool (every model step): one step per GPU; on a host without one the models run on the CPU, and as
        # many model steps as runs in flight may share it (the run limit already bounds the CPU work). A deployment's
        # instance keeps the limit its operators set.
        instance.event_log_storage.set_concurrency_slots(POOL, visible_gpus() or settings.max_concurrent_runs)
    known = set(instance.get_dynamic_partitions(shards_partitions.name))
    instance.add_dynamic_partitions(shards_partitions.name, [s for s in shards if s not in known])
    failed: list[Outcome] = []

    def report(out: Outcome) -> None:
        if not out.ok:
            failed.append(out)
        if verbose:
            print_outcome(out)
            if settings.executor == "ray":
                print_step_nodes(out.run_id)

    if verbose:
        steps = "each run's steps in its run worker" if settings.executor == "in_process" else f"up to {settings.max_concurrent} steps per run"
        print(f"  executor {settings.executor} ({steps}), {settings.max_concurrent_runs} runs at a time", flush=True)
    with open_workspace(instance) as workspace:
        launcher = Launcher(instance, workspace, settings.max_concurrent_runs, run_config=QUIET)

        def ingest(names: list[str], again: bool) -> list[str]:
            why = " (stale duplicate verdicts: ingest again)" if again else ""
            return [o.request.partition for o in launcher.run([Request("ingest_shard", s, s + why) for s in names], report) if o.ok]

        # concurrent ingests commit in any order: shards left with stale copy verdicts are ingested again
        ingested, _ = ingest_until_settled(ingest, DuplicateIndex(path=str(settings.duplicate_index_path)).stale_shards, shards)
        # The referee and the alignment levels read every ingested shard; the model stages read both.
        launcher.run([Request("shared_models" if ingested else "train_reward_model", None, "all shards")], report)
        launcher.run([Request("shard_models", s, s) for s in ingested], report)
        (compressed,) = launcher.run([Request("compress_dataset", None, "all shards")], report)
        if evaluate and compressed.ok and launcher.has_job("evaluate_curation"):
            launcher.run([Request("evaluate_curation", None, "curated vs baselines")], report)
    return len(failed)


def print_outcome(out) -> None:
    """One line per finished run (``launch.Outcome``), and the first step error under a failed one."""
    status = "ok" if out.ok else "FAILED"
    why = f"\n         {out.reason}" if out.reason else ""
    print(f"  {status:6s} {out.request.job:24s} {out.request.label}  ({out.seconds:.1f}s, run {out.run_id[:8]}){why}", flush=True)


def run_eval(config: dict | None = None) -> int:
    """Launch curation_eval alone, over what the lake holds now (``config``: CurationEvalConfig overrides). Returns failures."""
    from dagster import DagsterInstance

    from caption_assets.launch import Launcher, Request, open_workspace

    instance = DagsterInstance.get()
    with open_workspace(instance) as workspace:
        launcher = Launcher(instance, workspace, 1, run_config=QUIET)
        if not launcher.has_job("evaluate_curation"):
            raise CliError("curation_eval is off in this profile (evaluation.enabled): it measures on the procedural world's test split")
        (out,) = launcher.run([Request("evaluate_curation", None, "curated vs baselines")], run_config={"ops": {"curation_eval": {"config": config or {}}}})
    print_outcome(out)
    return 0 if out.ok else 1


def print_evaluation(detail: bool = False) -> None:
    """The headline of the latest curation_eval run (and with ``detail``, its table and the stage truth)."""
    import polars as pl

    from caption_assets.curation_eval.headline import differences_table, headline, wide_table
    from caption_assets.settings import load_settings
    from resources import QualityWarehouse

    wh = QualityWarehouse(path=str(load_settings().warehouse_path))
    evaluation, truth = wh.latest_evaluation()
    diffs = wh.latest_differences()
    if evaluation.is_empty():
        return
    with pl.Config(tbl_rows=100, tbl_hide_dataframe_shape=True, tbl_hide_column_data_types=True, tbl_width_chars=200, fmt_str_lengths=40):
        if detail:
            print("\nCuration eval (percent, mean [95% interval over seeds and test queries]; same recipe and samples seen for every set;"
                  " _canonical: queries in the caption grammar's phrasing, the others in a held-out one):")
            print(wide_table(evaluation))
            if not diffs.is_empty():
                print("\ncurated minus each baseline (points, 95% interval, paired on seeds and queries):")
                print(differences_table(diffs))
            if not truth.is_empty():
                print("\nEach stage against the crawl's truth table:")
                print(truth.select("stage", "metric", pl.col("value").round(3), "n"))
    print(f"\nDoes curation help?  {headline(evaluation, diffs)}")


def print_trace(uid: str | None, shard: str | None, key: str | None, as_json: bool) -> None:
    import json

    from caption_assets.settings import load_settings
    from caption_assets.trace import render_text, trace

    if uid is None:
        if not (shard and key):
            raise CliError("trace needs a uid (<shard>::<key>) or both --shard and --key")
        uid = f"{shard}::{key}"
    try:
        found = trace(load_settings().lake_dir, uid)
    except ValueError as exc:
        raise CliError(str(exc)) from None
    if found is None:
        raise CliError(f"no stage has a pair {uid!r} (uids are <shard>::<key>; `caption-assets report` lists the shards)", code=1)
    print(json.dumps(found, default=str, indent=2) if as_json else render_text(found))


def print_funnel() -> None:
    import polars as pl

    from caption_assets.settings import load_settings
    from resources import QualityWarehouse

    settings = load_settings()
    wh = QualityWarehouse(path=str(settings.warehouse_path))
    funnel = wh.query(
        "SELECT stage, outcome, coalesce(reason, '') AS reason, sum(count)::BIGINT AS count, count(DISTINCT partition) AS shards "
        "FROM funnel GROUP BY ALL ORDER BY stage, outcome, count DESC"
    )
    if funnel.is_empty():
        print(f"The warehouse {settings.warehouse_path} has no funnel rows yet: run `caption-assets demo` first.")
        return
    with pl.Config(tbl_rows=200, tbl_hide_dataframe_shape=True, tbl_hide_column_data_types=True, fmt_str_lengths=60):
        print(funnel)


def write_html(path: Path, gallery: int = 4) -> None:
    from caption_assets.assets.compressed import build_report
    from caption_assets.settings import load_settings
    from resources import LakeStorage, QualityWarehouse

    s = load_settings()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(build_report(LakeStorage(root=str(s.lake_dir)), QualityWarehouse(path=str(s.warehouse_path)), gallery_per_outcome=gallery), encoding="utf-8")
    print(f"wrote {path}")


def publish_warehouse() -> None:
    """Refresh the warehouse file's views (the rows are parquet the steps wrote); only the CLI writes that file,
    on the machine a person works on, so no step on another machine ever opens it for writing."""
    import duckdb
    from filelock import Timeout

    from caption_assets.settings import load_settings
    from resources import QualityWarehouse

    path = load_settings().warehouse_path
    try:
        QualityWarehouse(path=str(path)).publish()
    except (duckdb.IOException, Timeout) as exc:  # someone holds the file open for writing; its views are still right
        print(f"note: could not refresh {path} ({str(exc).splitlines()[0]}); its views still read the current rows", file=sys.stderr)


def print_where(home: Path) -> None:
    from caption_assets.settings import load_settings
    from resources.warehouse import rows_dir_for

    s = load_settings()
    publish_warehouse()
    print("\nWhere to look:")
    script = Path(sys.executable).parent / "caption-assets"  # the venv's script: works without activating it
    print(f"  UI         {UI_HINT.format(home=home, exe=script if script.exists() else 'caption-assets')}")
    print(f"  warehouse  {s.warehouse_path}   (caption-assets report, or duckdb -readonly; the rows: {rows_dir_for(s.warehouse_path)}/)")
    print(f"  outputs    {s.lake_dir}/<asset>/<shard>.parquet")
    export = s.lake_dir / "compressed_dataset"
    if (export / "manifest.parquet").exists():
        shards = sorted(export.glob("shard-*.tar"))
        print(f"  dataset    {export}/shard-*.tar ({len(shards)} WebDataset shard(s))")
        print(f"  manifest   {export / 'manifest.parquet'}")
        print(f"  report     {export / 'report.html'}")


def print_examples(n: int = 6) -> None:
    """A few exported pairs, alt-text next to the caption the chain chose: what a user would open first."""
    import polars as pl

    from caption_assets.settings import load_settings

    lake = load_settings().lake_dir
    manifest = lake / "compressed_dataset" / "manifest.parquet"
    if not manifest.exists():
        return
    alt = pl.scan_parquet(str(lake / "fused_captions" / "*.parquet")).select("uid", pl.col("caption").alias("alt_text"))
    df = pl.scan_parquet(manifest).select("uid", "key", "final_caption", "final_source").join(alt, on="uid").sort("uid").collect()
    changed = df.filter(pl.col("alt_text") != pl.col("final_caption"))
    pick = pl.concat([changed.gather_every(max(1, changed.height // max(n - 1, 1))).head(n - 1), df.filter(pl.col("alt_text") == pl.col("final_caption")).head(1)])
    print(f"\nSelected pairs ({df.height} exported; alt-text -> final caption [source]):")
    for r in pick.iter_rows(named=True):
        alt = r["alt_text"] if len(r["alt_text"]) <= 90 else r["alt_text"][:87] + "..."
        print(f"  {alt!r}\n      -> {r['final_caption']}  [{r['final_source']}]")


def print_models() -> None:
    """Which demo models ran, and where their training time and test-split figures are recorded."""
    import json

    from caption_assets.world.models import DEMO_MODELS

    report = DEMO_MODELS / "training_report.json"
    if os.environ.get("CAPTION_ASSETS_PROFILE", "demo") != "demo" or not report.exists():
        return
    r = json.loads(report.read_text())
    minutes = (r.get("render_seconds", 0) + sum(r[m]["train_seconds"] + r[m].get("render_seconds", 0) for m in ("clip", "captioner", "fuser") if m in r)) / 60
    clip, cap = r["test_split"]["clip"], r["test_split"]["captioner"]
    fuser = r["test_split"].get("fuser")
    fused = f", fused captions keeping the printed word {fuser['word_kept_when_carried']:.2f}" if fuser else ""
    print(f"  models     {DEMO_MODELS} (trained on the world's training split in {minutes:.0f} min of CPU; held-out: "
          f"zero-shot shape {clip['zeroshot_shape_acc']:.2f} / colour {clip['zeroshot_colour_acc']:.2f}, "
          f"captions naming every object {cap['greedy_names_every_object']:.2f}{fused})")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="caption-assets", description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="register the shards of a crawl folder and materialize the chain")
    run.add_argument("--crawl", type=Path, required=True)
    run.add_argument("--out", type=Path, required=True, help="data folder: lake, warehouse, dagster_home")
    run.add_argument("--profile", choices=["demo", "production"], default=None)
    run.add_argument("--eval", action="store_true", help="then curation_eval (world crawls: it tests on the world's held-out split)")
    run.add_argument("--executor", choices=EXECUTORS, default=None, help="where each run's steps execute (default: the settings', multiprocess)")
    run.add_argument("--max-runs", type=int, default=None, help="runs in flight at once (default: CAPTION_ASSETS_MAX_CONCURRENT_RUNS, 2)")
    sub.add_parser("demo", help="run the whole chain on the bundled sample crawl (offline), then curation_eval")
    ev = sub.add_parser("eval", help="train the fixed recipe on the curated set and its baselines; print the comparison")
    ev.add_argument("--out", type=Path, default=None, help="data folder of an earlier run (default: the profile's)")
    ev.add_argument("--crawl", type=Path, default=None, help="its crawl folder (the truth table is read from beside it)")
    ev.add_argument("--steps", type=int, default=None, help="training steps of the recipe (default: the profile's)")
    ev.add_argument("--seeds", type=str, default=None, help="comma-separated seeds, e.g. 0,1,2 (default: the profile's)")
    ev.add_argument("--model", choices=("bag", "open_clip"), default=None, help="the recipe's model (default: the profile's, bag)")
    report = sub.add_parser("report", help="print the funnel from the quality warehouse (and write the HTML report)")
    report.add_argument("--out", type=Path, default=None)
    report.add_argument("--html", type=Path, default=None, help="write the one-page HTML report here")
    report.add_argument("--gallery", type=int, default=4, help="sampled pairs per outcome in the report's gallery (0: none)")
    tr = sub.add_parser("trace", help="one pair's path through every stage (outcome, reason, scores, captions, export)")
    tr.add_argument("uid", nargs="?", help="<shard>::<key>, as in every lake table (<shard>::@<member> for a keyless quarantine row)")
    tr.add_argument("--shard", default=None, help="with --key, instead of a uid")
    tr.add_argument("--key", default=None)
    tr.add_argument("--json", action="store_true", help="machine-readable output")
    tr.add_argument("--out", type=Path, default=None, help="data folder of the run (default: the profile's)")
    cl = sub.add_parser("cluster", help="a local cluster: PostgreSQL for the instance, a Ray head and worker nodes (then run --executor ray)")
    cl.add_argument("action", choices=["up", "down", "status"])
    cl.add_argument("--dir", type=Path, default=None, help="cluster folder (default: CAPTION_ASSETS_CLUSTER_DIR or data/cluster)")
    cl.add_argument("--workers", type=int, default=1, help="Ray worker nodes beside the head (default 1)")
    cl.add_argument("--cpus-per-node", type=int, default=1, help="CPUs each node offers to steps (default 1)")
    ui = sub.add_parser("ui", help="start the Dagster UI (dagster dev) on this project's instance")
    ui.add_argument("--port", type=int, default=3000)
    args = ap.parse_args(argv)
    try:
        if args.command == "cluster":
            cluster_command(args.action, cluster_dir(args.dir), args.workers, args.cpus_per_node)
            return 0
        if args.command == "run":
            home = _configure_env(args.crawl, args.out, args.profile, args.executor, args.max_runs)
        elif args.command == "eval":
            home = _configure_env(args.crawl, args.out, None)
        elif args.command == "demo":
            home = _configure_env(PROJECT_ROOT / "data" / "sample" / "crawl", None, "demo")
        else:
            if args.command == "ui":
                check_ui_can_start(args.port)
            home = _configure_env(None, getattr(args, "out", None), None)
        if args.command in ("run", "demo"):
            t0 = time.perf_counter()
            print(f"Materializing the chain (DAGSTER_HOME={home})", flush=True)
            failures = run_chain(evaluate=args.command == "demo" or args.eval)
            print(f"\nDone in {time.perf_counter() - t0:.1f}s.\n")
            print_funnel()
            print_examples()
            print_where(home)
            print_models()
            print_evaluation()
            if failures:
                raise CliError(f"{failures} run(s) failed; open the UI's Runs page for the error", code=1)
        elif args.command == "eval":
            overrides: dict[str, object] = {}
            if args.steps is not None:
                overrides["steps"] = args.steps
            if args.model is not None:
                overrides["model"] = args.model
            if args.seeds is not None:
                try:
                    overrides["seeds"] = [int(x) for x in args.seeds.split(",") if x.strip()]
                except ValueError:
                    raise CliError(f"--seeds {args.seeds!r} must be comma-separated integers") from None
            failures = run_eval(overrides)
            publish_warehouse()
            print_evaluation(detail=True)
            if failures:
                raise CliError("curation_eval failed; open the UI's Runs page for the error", code=1)
        elif args.command == "trace":
            print_trace(args.uid, args.shard, args.key, args.json)
        elif args.command == "report":
            publish_warehouse()
            print_funnel()
            if args.html:
                write_html(args.html, args.gallery)
        elif args.command == "ui":
            publish_warehouse()
            workspace = PROJECT_ROOT / "workspace.yaml"
            target = ["-w", str(workspace)] if workspace.exists() else ["-m", "caption_assets.definitions"]
            # the interpreter running this CLI has dagster: no need for the venv on PATH
            os.execv(sys.executable, [sys.executable, "-m", "dagster", "dev", *target, "-h", "127.0.0.1", "-p", str(args.port)])
    except (CliError, SettingsError) as exc:
        print(f"caption-assets: {exc}", file=sys.stderr)
        return getattr(exc, "code", 2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
