"""Thousands of shards: sensor tick, nightly backfill plan, report, warehouse queries, duplicate-index lookups.

    python bench/scale.py [--shards 2000] [--small 200] [--rows 100]
    python bench/scale.py --growth 200,2000,6000,10000     # one index grown to 10,000 shards (~9 min)
    python bench/scale.py --copies 2000,10000              # copy candidates + verification per image at each size (~3 min)
    python bench/scale.py --world 3x1000 [--parallel 2]    # world-crawl shards through ingest + the index: ms/image, lock held (~2 min)
    python bench/scale.py --shards 10000 --instance sqlite,postgres --skip-index   # the instance on both storages
    python bench/scale.py --writers 4 --instance sqlite,postgres                   # writers at once, per storage

Builds, in a temporary folder, ``--shards`` tiny tar shards (one sample each: the sensor only lists
and stats them), a Dagster instance (SQLite, as `dagster dev` uses) holding one materialization per
shard and stage, a warehouse with every stage's funnel, quarantine, stats and version rows for every
shard, and duplicate indexes of ``--small`` and ``--shards`` shards of ``--rows`` images each. Then it
times what a user waits for. Targets (issue 12): sensor tick < 10 s, backfill planning < 30 s,
report < 2 s, duplicate lookup at ``--shards`` <= 1.5x at ``--small``.
"""

from __future__ import annotations

import argparse
import io
import os
import random
import shutil
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import polars as pl

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

STAGES = ("raw_pairs", "scored_pairs", "recaptioned_pairs", "vision_expert_tags", "fused_captions")


def timed(fn, repeat: int = 1) -> tuple[float, object]:
    """(median seconds, last result) over ``repeat`` calls."""
    times, out = [], None
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), out


def write_shards(crawl: Path, n: int) -> list[str]:
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (8, 8), (200, 30, 30)).save(buf, "JPEG")
    jpg = buf.getvalue()
    keys = []
    for i in range(n):
        sub = crawl / f"part-{i // 500:02d}"  # crawls come in folders of a few hundred shards
        sub.mkdir(parents=True, exist_ok=True)
        with tarfile.open(sub / f"{i:06d}.tar", "w") as tf:
            for name, data in ((f"{i:06d}.jpg", jpg), (f"{i:06d}.txt", b"a tiny red square")):
                info = tarfile.TarInfo(name)
                info.size = len(data)
                tf.addfile(info, io.BytesIO(data))
        keys.append(f"part-{i // 500:02d}/{i:06d}.tar")
    return keys


def fill_warehouse(path: Path, shards: list[str], rows_per_shard: int) -> float:
    """Every stage's funnel (~3 rows), stats, version and quarantine rows for every shard, written the way the
    steps write them (one ``replace_partition`` per shard and stage); returns seconds per write."""
    from resources.warehouse import QualityWarehouse

    rng = np.random.default_rng(0)
    reasons = {"raw_pairs": ["duplicate_image", "small_image", "boilerplate_caption"], "scored_pairs": ["low_clip_score", "flag:small_image"],
               "recaptioned_pairs": ["degenerate"], "vision_expert_tags": [None], "fused_captions": ["guardrail"]}
    warehouse = QualityWarehouse(path=str(path))
    with tempfile.TemporaryDirectory() as tmp:
        q = Path(tmp) / "q.parquet"  # every shard's two quarantined members
        pl.DataFrame({"stage": ["raw_pairs"] * 2, "key": ["k0", "k1"], "member": ["k0.jpg", "k1.jpg"], "reason": ["not_an_image"] * 2,
                      "message": ["cannot identify image file"] * 2}).write_parquet(q)
        t0, writes = time.perf_counter(), 0
        for i, p in enumerate(shards):
            for stage in STAGES:
                funnel = [("in", None, rows_per_shard)] + [("filtered", r, int(rng.integers(0, 10))) for r in reasons[stage]]
                versions = {"alignment_levels": "levels-old" if i % 20 == 0 else "levels-current"} if stage == "scored_pairs" else None
                warehouse.replace_partition(stage, p, funnel, q if stage == "raw_pairs" else None, "bench", [("rows", rows_per_shard)], versions)
                writes += 1
        return (time.perf_counter() - t0) / writes


def fill_index(path: Path, n_shards: int, rows: int, seed: int = 0):
    from caption_assets.duplicate_index import ImageIndex

    index = ImageIndex(path)
    rng = np.random.default_rng(seed)
    for s in range(n_shards):
        index.update(f"{s:06d}.tar", index_rows(rng, f"{s:06d}.tar", rows))
    return index


def index_rows(rng: np.random.Generator, shard: str, rows: int) -> pl.DataFrame:
    return pl.DataFrame({
        "uid": [f"{shard}::{i}" for i in range(rows)],
        "sha256": [f"{x:032x}" for x in rng.integers(0, 2**62, size=rows)],
        "phash": rng.integers(-(2**63), 2**63 - 1, size=rows, dtype=np.int64),
    })


def lookup_time(index, rows: int, repeat: int = 9) -> tuple[float, float]:
    """Median (lookup, add + lookup) seconds for one more shard, over fresh shards sorting in the middle."""
    rng = np.random.default_rng(99)
    lookups, totals = [], []
    for r in range(repeat):
        shard = f"{r * 97:06d}-new.tar"  # between existing shards: later shards are searched too
        frame = index_rows(rng, shard, rows)
        t0 = time.perf_counter()
        update = index.update(shard, frame)
        totals.append(time.perf_counter() - t0)
        lookups.append(update.lookup_s)
    return statistics.median(lookups), statistics.median(totals)


def reread_time(folder: Path, n_shards: int, rows: int) -> float:
    """What the index replaced: one shard's cross-shard check re-read the sha256 column of every earlier raw_pairs file."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(2)
    for s in range(n_shards):
        index_rows(rng, f"{s:06d}.tar", rows).select("sha256").write_parquet(folder / f"{s:06d}.parquet")
    files = sorted(str(f) for f in folder.glob("*.parquet"))
    t, _ = timed(lambda: pl.scan_parquet(files).select("sha256").unique().collect(), repeat=3)
    return t


def growth(counts: list[int], rows: int) -> None:
    """One index grown shard by shard: lookup cost at each size (does it follow the shard count?)."""
    from caption_assets.duplicate_index import ImageIndex

    with tempfile.TemporaryDirectory() as tmp:
        index, rng, done, t0 = ImageIndex(Path(tmp) / "index.sqlite"), np.random.default_rng(0), 0, time.perf_counter()
        for target in counts:
            while done < target:
                index.update(f"{done:06d}.tar", index_rows(rng, f"{done:06d}.tar", rows))
                done += 1
            lookup, total = lookup_time(index, rows)
            size = index.path.stat().st_size / 1e6
            print(f"{target:6d} shards x {rows} images: lookup {lookup * 1e3:5.1f} ms, add + lookup {total * 1e3:5.1f} ms, "
                  f"index {size:4.0f} MB (built in {time.perf_counter() - t0:.0f}s)", flush=True)


def bulk_fill(con, start: int, end: int, rows: int, rng: np.random.Generator, n_bands: int) -> None:
    """Shards ``start``..``end`` of background images written straight into the tables (no lookups: fast to
    build): random 64-bit full-frame and centre-window hashes, as ``update`` would store them, no thumbnails."""
    from caption_assets import copy_detection as cd
    from caption_assets.duplicate_index import FAMILY_BANDS, band_values

    first = con.execute("SELECT coalesce(max(id), 0) + 1 FROM images").fetchone()[0]
    n = (end - start) * rows
    ids = np.arange(first, first + n)
    shard = np.repeat([f"{s:06d}.tar" for s in range(start, end)], rows)
    ords = np.tile(np.arange(rows), end - start)
    phash = rng.integers(-(2**63), 2**63 - 1, size=n, dtype=np.int64)
    centre = rng.integers(-(2**63), 2**63 - 1, size=n, dtype=np.int64)
    sha = [f"{x:032x}" for x in rng.integers(0, 2**62, size=n)]
    con.execute("BEGIN")
    con.executemany("INSERT INTO images VALUES (?, ?, ?, ?, ?, ?, NULL)",
                    zip(ids.tolist(), shard.tolist(), ords.tolist(), [f"{s}::{o}" for s, o in zip(shard, ords)], sha, phash.tolist()))
    for family, hashes in ((0, phash), (cd.CENTRE_FAMILY, centre)):
        values = band_values(hashes, n_bands)
        for b in range(n_bands):
            con.executemany("INSERT INTO bands VALUES (?, ?, ?, ?)",
                            zip([family * FAMILY_BANDS + b] * n, values[:, b].tolist(), ids.tolist(), hashes.tolist()))
    con.executemany("INSERT OR IGNORE INTO shards VALUES (?, 0, 0, NULL)", [(f"{s:06d}.tar",) for s in range(start, end)])
    con.execute("COMMIT")


def copy_lookup_time(index, shard: str, items: list, repeat: int = 5) -> dict[str, float]:
    """Per image of a shard of real photographs that are all copies of images in the index: median seconds of
    the lookup (hashing the 75 query windows, the band probes, verifying candidates), of verification alone,
    and the candidate pairs verified. The shard is re-ingested with a rotated selection, so its earlier
    version is replaced, not piled up."""
    from caption_assets.images import inspect_image

    infos = [inspect_image(it.data) for it in items]
    frame = pl.DataFrame({"uid": [f"{shard}::{it.name}" for it in items], "sha256": [i.sha256 for i in infos],
                          "phash": [i.phash for i in infos], "thumb": [i.thumb for i in infos]},
                         schema={"uid": pl.String, "sha256": pl.String, "phash": pl.Int64, "thumb": pl.Binary})
    lookup, verify, pairs, found = [], [], [], []
    for r in range(repeat):
        part = frame.sample(fraction=0.9, seed=r, shuffle=True)
        u = index.update(shard, part)
        lookup.append(u.lookup_s / part.height)
        verify.append(u.verify_s / part.height)
        pairs.append(u.verified / part.height)
        found.append(float((u.verdicts["duplicate_kind"] == "copy").fill_null(False).mean()))
    return {"lookup": statistics.median(lookup), "verify": statistics.median(verify), "pairs": statistics.median(pairs), "found": statistics.median(found)}


def copies_growth(counts: list[int], rows: int) -> None:
    """Copy detection's per-image cost as the index grows: today's lookup (random pHashes, no thumbnail) next to
    a shard of real-photo copies (candidates + verification), on one index of background images."""
    from caption_assets.duplicate_index import ImageIndex
    from tests.copy_photos import corpus
    from tests.test_copy_detection import index_rows as photo_rows

    items = corpus()
    originals, copies = [it for it in items if it.kind == "original"], [it for it in items if it.kind != "original"]
    with tempfile.TemporaryDirectory() as tmp:
        index, rng, done, t0 = ImageIndex(Path(tmp) / "index.sqlite"), np.random.default_rng(0), 0, time.perf_counter()
        index.update("000000-photos.tar", photo_rows(originals, "000000-photos.tar"))
        for target in counts:
            with index.connect() as con:
                while done < target:
                    step = min(target, done + 500)
                    bulk_fill(con, done, step, rows, rng, index.n_bands)
                    done = step
            build = time.perf_counter() - t0
            lookup, total = lookup_time(index, rows)
            c = copy_lookup_time(index, "copies-probe.tar", copies)
            print(f"{target:6d} shards x {rows} images: today's lookup {lookup / rows * 1e3:5.2f} ms/image (shard {lookup * 1e3:5.1f} ms, add + lookup {total * 1e3:5.1f} ms); "
                  f"copies: lookup {c['lookup'] * 1e3:5.2f} ms/image of which verification {c['verify'] * 1e3:5.2f} ms ({c['pairs']:.2f} pairs/image, "
                  f"{c['found']:.2f} found), index {index.path.stat().st_size / 1e6:4.0f} MB (built in {build:.0f}s)", flush=True)


def world_ingest(n_shards: int, per_shard: int, parallel: int, seed: int = 4242) -> None:
    """Ingest of world-crawl shards (simple shapes: many copy candidates per image) through ``ingest_shard`` and
    the duplicate index, ``parallel`` at a time (processes, like concurrent runs): per shard, ms per image, the
    candidate pairs, verification, how long the write lock was held and how many plans it took."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    from bench.eval import web_texts
    from caption_assets.shards import discover_shards
    from caption_assets.world.crawl import CrawlSpec, shard_plan, write_crawl

    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        write_crawl(Path(tmp), CrawlSpec(shard_plan(n_shards, per_shard), seed=seed, web_texts=web_texts()))
        crawl, index = Path(tmp) / "crawl", str(Path(tmp) / "index.sqlite")
        print(f"world crawl: {n_shards} shards x {per_shard} pairs written in {time.perf_counter() - t0:.0f}s", flush=True)
        t0 = time.perf_counter()
        with ProcessPoolExecutor(parallel, mp_context=multiprocessing.get_context("spawn")) as pool:  # polars' threads do not survive a fork
            for line in pool.map(_world_shard, [(crawl, s, index) for s in discover_shards(crawl)]):
                print(line, flush=True)
        print(f"all shards ingested in {time.perf_counter() - t0:.0f}s, {parallel} at a time", flush=True)


def _world_shard(job: tuple[Path, str, str]) -> str:
    from caption_assets.duplicate_index import ImageIndex
    from caption_assets.ingest import ingest_shard

    crawl, shard, index = job
    updates = []
    t0 = time.perf_counter()
    result = ingest_shard(crawl / shard, shard, duplicates=lambda rows: (updates.append(ImageIndex(index).update(shard, rows)), updates[-1].verdicts)[1])
    total, u, n = time.perf_counter() - t0, updates[-1], max(result.pairs.height, 1)
    return (f"{shard}: {total / n * 1e3:5.1f} ms/image ({total:5.1f}s), lookup {u.lookup_s:5.1f}s, {u.candidates / n:5.1f} candidate pairs/image, "
            f"verified {u.verified} in {u.verify_s:5.1f}s ({u.verify_s / max(u.verified, 1) * 1e3:.2f} ms/pair), lock held {u.lock_s * 1e3:.0f} ms, "
            f"{u.attempts} plan(s); {(u.verdicts['duplicate_kind'] == 'copy').sum()} copies, {(u.verdicts['duplicate_kind'] == 'exact').sum()} exact")


@contextmanager
def instance_on(storage: str, home: Path):
    """A fresh instance on SQLite (a folder, as `dagster dev` uses) or on a throwaway local PostgreSQL server."""
    from dagster import DagsterInstance

    if storage == "sqlite":
        home.mkdir(parents=True)
        with DagsterInstance.local_temp(tempdir=str(home)) as instance:
            yield instance
        return
    if storage != "postgres":
        raise SystemExit(f"--instance: {storage!r} is not sqlite or postgres")
    from caption_assets.cluster import ClusterSpec, instance_yaml, postgres_down, postgres_up

    spec = ClusterSpec(home, postgres_port=25999)
    home.mkdir(parents=True)
    postgres_up(spec)
    try:
        (home / "dagster.yaml").write_text(instance_yaml(spec))
        with DagsterInstance.from_config(str(home)) as instance:
            yield instance
    finally:
        postgres_down(spec)
        shutil.rmtree(spec.postgres_dir, ignore_errors=True)  # a throwaway server


def _record(args: tuple[str, int, int]) -> float:
    """One writer process: ``n`` materializations of its own partitions into the instance at ``home``."""
    home, writer, n = args
    from dagster import AssetKey, AssetMaterialization, DagsterInstance

    with DagsterInstance.from_config(home) as instance:
        t0 = time.perf_counter()
        for i in range(n):
            instance.report_runless_asset_event(AssetMaterialization(AssetKey("raw_pairs"), partition=f"w{writer}-{i:06d}"))
        return time.perf_counter() - t0


def concurrent_writers(storages: list[str], writers: int, per_writer: int) -> None:
    """Materializations recorded by ``writers`` processes at once (run workers on several nodes), per storage."""
    import multiprocessing as mp

    with tempfile.TemporaryDirectory() as tmp:
        for storage in storages:
            with instance_on(storage, Path(tmp) / storage) as instance:
                home = str(Path(tmp) / storage)
                for k in sorted({1, writers}):
                    t0 = time.perf_counter()
                    with mp.get_context("spawn").Pool(k) as pool:
                        pool.map(_record, [(home, w, per_writer) for w in range(k)])
                    wall = time.perf_counter() - t0
                    print(f"  [{storage}] {k} writer(s) x {per_writer}: {k * per_writer / wall:6.0f} materializations/s "
                          f"({wall:.1f}s wall, process start included)", flush=True)
                assert instance.get_latest_materialization_event(__import__("dagster").AssetKey("raw_pairs")) is not None


def instance_figures(instance, storage: str, keys: list[str], defs, sensor_resources: dict, schedule_resources: dict) -> list[tuple[str, float, str]]:
    """Sensor ticks, recording one materialization per shard and stage, and the nightly plan on ``instance``."""
    from dagster import AssetKey, AssetMaterialization, build_schedule_context, build_sensor_context

    from caption_assets.sensors import crawl_sensor

    tag = f"[{storage}] " if storage else ""
    out: list[tuple[str, float, str]] = []
    tick_s, first = timed(lambda: crawl_sensor(build_sensor_context(instance=instance, resources=sensor_resources)))
    add_s, _ = timed(lambda: [instance.add_dynamic_partitions(r.partitions_def_name, list(r.partition_keys)) for r in first.dynamic_partitions_requests])
    assert len(first.run_requests) == len(keys) and len(instance.get_dynamic_partitions("shards")) == len(keys)
    out.append((f"{tag}sensor tick, first (register every shard)", tick_s + add_s, f"evaluate {tick_s:.2f}s + add partitions {add_s:.2f}s; {len(first.run_requests)} run requests"))
    again_s, again = timed(lambda: crawl_sensor(build_sensor_context(instance=instance, cursor=first.cursor, resources=sensor_resources)), repeat=3)
    assert again.run_requests == []
    out.append((f"{tag}sensor tick, nothing new", again_s, "lists + stats every shard, compares with the cursor"))
    t0 = time.perf_counter()
    rng, n = random.Random(0), 0
    for stage in STAGES:
        for p in keys:
            if stage == "fused_captions" and rng.random() < 0.05:
                continue  # 5% of shards miss their last stage
            instance.report_runless_asset_event(AssetMaterialization(AssetKey(stage), partition=p))
            n += 1
    rec_s = time.perf_counter() - t0
    out.append((f"{tag}record {n} materializations", rec_s, f"{1000 * rec_s / n:.2f} ms each, one at a time"))
    nightly = defs.resolve_schedule_def("nightly_shard_backfill")
    context = build_schedule_context(instance=instance, resources=schedule_resources, repository_def=defs.get_repository_def(),
                                     scheduled_execution_time=datetime(2026, 11, 26, 2, tzinfo=timezone.utc))
    plan_s, plan = timed(lambda: nightly(context))
    reasons = pl.Series([r.tags["reason"] for r in plan]).value_counts(sort=True).rows()
    out.append((f"{tag}nightly backfill plan", plan_s, f"{len(plan)} run requests: " + ", ".join(f"{n} {why}" for why, n in reasons)))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shards", type=int, default=2000)
    ap.add_argument("--small", type=int, default=200)
    ap.add_argument("--rows", type=int, default=100, help="images per shard in the duplicate index")
    ap.add_argument("--copies", default="", help="only time copy candidates + verification per image on one bulk-built index at these shard counts (e.g. 2000,10000)")
    ap.add_argument("--warehouse-only", action="store_true", help="time the warehouse only: one step's write and the queries the "
                    "checks, the nightly plan and the report run over every shard's rows (with --skip-index)")
    ap.add_argument("--instance", default="sqlite", help="instance storage(s), comma-separated: sqlite (dagster dev's), postgres (a throwaway "
                    "local PostgreSQL server, as `caption-assets cluster up` starts one)")
    ap.add_argument("--skip-index", action="store_true", help="time the instance, sensor, plan and warehouse only (not the duplicate index)")
    ap.add_argument("--writers", type=int, default=0, help="only time materializations recorded by this many processes at once "
                    "(and by one), on each --instance storage")
    ap.add_argument("--per-writer", type=int, default=500)
    ap.add_argument("--growth", default="", help="only grow one duplicate index through these shard counts (e.g. 200,2000,6000,10000) and time a lookup at each")
    ap.add_argument("--world", default="", help="only ingest a world crawl of SHARDSxPAIRS (e.g. 3x1000) through the duplicate index and time each shard")
    ap.add_argument("--parallel", type=int, default=1, help="with --world: shards ingested at a time (processes)")
    args = ap.parse_args()
    if args.world:
        n_shards, per_shard = (int(n) for n in args.world.split("x"))
        return world_ingest(n_shards, per_shard, args.parallel)
    if args.writers:
        return concurrent_writers(args.instance.split(","), args.writers, args.per_writer)
    if args.copies:
        return copies_growth([int(n) for n in args.copies.split(",")], args.rows)
    if args.growth:
        return growth([int(n) for n in args.growth.split(",")], args.rows)
    os.environ.setdefault("DAGSTER_DISABLE_TELEMETRY", "1")
    from caption_assets.definitions import build_definitions
    from caption_assets.settings import load_settings
    from resources import CrawlSource, DuplicateIndex, LakeStorage, QualityWarehouse

    results: list[tuple[str, float, str]] = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        crawl, home, data = tmp / "crawl", tmp / "dagster_home", tmp / "data"
        home.mkdir()
        t0 = time.perf_counter()
        keys = write_shards(crawl, args.shards)
        print(f"setup: {args.shards} shards written in {time.perf_counter() - t0:.1f}s", flush=True)
        env = {"CAPTION_ASSETS_PROFILE": "demo", "CAPTION_ASSETS_CRAWL_DIR": str(crawl), "CAPTION_ASSETS_DATA_DIR": str(data)}
        settings = load_settings(env)
        defs = build_definitions(settings)
        duplicates = DuplicateIndex(path=str(settings.duplicate_index_path))
        resources = {"crawl": CrawlSource(crawl_dir=str(crawl)), "duplicates": duplicates}

        t0 = time.perf_counter()
        write_s = fill_warehouse(settings.warehouse_path, keys, rows_per_shard=100)
        print(f"setup: warehouse rows for {len(keys)} shards x {len(STAGES)} stages in {time.perf_counter() - t0:.1f}s", flush=True)
        results.append(("warehouse: one step's rows (replace_partition)", write_s, "parquet per table, temp + rename; no lock, any machine"))
        lake = LakeStorage(root=str(settings.lake_dir))
        (settings.lake_dir / "alignment_levels").mkdir(parents=True)
        (settings.lake_dir / "alignment_levels" / "current.json").write_text('{"version": "levels-current", "boundaries": [0.2, 0.25, 0.3], "scorer": "x"}')
        warehouse = QualityWarehouse(path=str(settings.warehouse_path))
        for storage in [] if args.warehouse_only else args.instance.split(","):
            with instance_on(storage, tmp / f"{storage}_home") as instance:
                results += instance_figures(instance, storage if "," in args.instance else "", keys, defs, resources,
                                            {"warehouse": warehouse, "lake": lake, "duplicates": duplicates})

        queries = {
            "funnel by stage/outcome/reason": "SELECT stage, outcome, reason, sum(count) FROM funnel GROUP BY ALL",
            "quarantine by reason": "SELECT reason, count(*) FROM quarantine GROUP BY reason",
            "stale alignment levels (nightly plan)": "SELECT partition FROM versions WHERE name = 'alignment_levels' AND version <> 'levels-current'",
        }

        def query_figures(state: str, repeat: int) -> None:
            for name, sql in queries.items():
                q_s, _ = timed(lambda sql=sql: warehouse.query(sql), repeat=repeat)
                results.append((f"warehouse {state}: {name}", q_s, "loads the tables it names from one listing"))
            q_s, _ = timed(lambda: warehouse.partition_rows("funnel", "raw_pairs", keys[-1]), repeat=5)
            results.append((f"warehouse {state}: one partition's funnel (the check)", q_s, "its own file (or the compacted one): no listing"))

        files = warehouse.file_count()
        query_figures(f"({files} row files)", 1)
        c_s, _ = timed(warehouse.publish)
        results.append((f"warehouse: compact {files} row files + write the views (CLI)", c_s, f"{warehouse.file_count()} row files left"))
        query_figures("(compacted)", 5)
        cli = [sys.executable, "-m", "caption_assets.cli", "report"]
        report_s, proc = timed(lambda: subprocess.run(cli, env={**os.environ, **env}, capture_output=True, text=True, check=True), repeat=3)
        assert "raw_pairs" in proc.stdout
        results.append(("`caption-assets report` (new process, compacted)", report_s, "funnel over every stage and shard from the warehouse"))

        size_mb = None
        if not args.skip_index:
            t0 = time.perf_counter()
            small = fill_index(tmp / "small.sqlite", args.small, args.rows)
            big = fill_index(tmp / "big.sqlite", args.shards, args.rows, seed=1)
            print(f"setup: duplicate indexes of {args.small} and {args.shards} shards x {args.rows} images in {time.perf_counter() - t0:.1f}s", flush=True)
            (small_l, small_t), (big_l, big_t) = lookup_time(small, args.rows), lookup_time(big, args.rows)
            results.append((f"duplicate index: lookup, one shard at {args.small} shards", small_l, f"{args.rows} images, exact + near, earlier + later shards"))
            results.append((f"duplicate index: lookup, one shard at {args.shards} shards", big_l, f"ratio {big_l / small_l:.2f}x (target <= 1.5x)"))
            results.append((f"duplicate index: add + lookup at {args.small} shards", small_t, "one transaction: delete old rows, insert, look up, commit"))
            results.append((f"duplicate index: add + lookup at {args.shards} shards", big_t, f"ratio {big_t / small_t:.2f}x"))
            size_mb = (tmp / "big.sqlite").stat().st_size / 1e6
            small_r, big_r = reread_time(tmp / "reread-small", args.small, args.rows), reread_time(tmp / "reread-big", args.shards, args.rows)
            results.append((f"before the index: re-read earlier shards at {args.small}", small_r, "sha256 column of every earlier raw_pairs file"))
            results.append((f"before the index: re-read earlier shards at {args.shards}", big_r, f"ratio {big_r / small_r:.2f}x; {big_r / big_l:.0f}x the index lookup"))

    print(f"\n{args.shards} shards on {os.cpu_count()} cores ({sys.platform}, python {sys.version.split()[0]})\n")
    width = max(len(n) for n, _, _ in results)
    for name, secs, note in results:
        print(f"  {name:<{width}}  {secs:8.3f}s  {note}")
    if size_mb is not None:
        print(f"\n  duplicate index file at {args.shards} x {args.rows} images: {size_mb:.0f} MB")


if __name__ == "__main__":
    main()
