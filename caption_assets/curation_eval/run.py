"""Run the comparison: decode each ingested image once, train one model per (training set, seed), summarise.

Runs go to a pool of worker processes with one torch thread each (small models train faster as
parallel single-thread runs than as one run over several threads). Every run is seeded, so a result
does not depend on which worker ran it or in what order.
"""

from __future__ import annotations

import io
import multiprocessing as mp
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from contextlib import ExitStack

import numpy as np
import polars as pl
from PIL import Image

from caption_assets.curation_eval.intervals import HITS, Bootstrap, set_intervals
from caption_assets.curation_eval.recipe import Recipe
from caption_assets.curation_eval.testset import METRICS, TestSet, shrink
from caption_assets.curation_eval.training_sets import build_training_sets
from caption_assets.readers import read_image_bytes

EVALUATION_SCHEMA = {
    "training_set": pl.String, "metric": pl.String, "mean": pl.Float64, "sd": pl.Float64,
    "n_pairs": pl.Int64, "samples_seen": pl.Int64, "seeds": pl.String, "ci_lo": pl.Float64, "ci_hi": pl.Float64,
}


def _decode(ref: tuple) -> np.ndarray | None:
    ref, px = ref[:-1], ref[-1]
    try:
        with Image.open(io.BytesIO(read_image_bytes(*ref))) as im:
            im.draft("RGB", (px, px))
            return shrink(im, px)
    except Exception:  # noqa: BLE001 - the image changed or broke since ingest: the pair is left out and counted
        return None


def decode_images(refs: Sequence[tuple], px: int, workers: int = 2) -> tuple[np.ndarray, np.ndarray]:
    """uint8 [N, px, px, 3] and a mask of the images that decoded, from raw_pairs pointers."""
    jobs = [(*r, px) for r in refs]
    if workers > 1 and len(jobs) >= 512:
        with mp.get_context("spawn").Pool(workers) as pool:
            out = pool.map(_decode, jobs, chunksize=128)
    else:
        out = [_decode(j) for j in jobs]
    ok = np.array([o is not None for o in out], dtype=bool)
    blank = np.zeros((px, px, 3), np.uint8)
    return (np.stack([o if o is not None else blank for o in out]) if out else np.zeros((0, px, px, 3), np.uint8)), ok


_STATE: dict = {}


def _init(pixels: np.ndarray, test: TestSet, recipe: Recipe) -> None:
    import torch

    torch.set_num_threads(1)
    _STATE.update(pixels=pixels, test=test, recipe=recipe)


def _train_and_measure(task: tuple[str, int, np.ndarray, list[str]]) -> dict:
    from caption_assets.curation_eval.recipe import train
    from caption_assets.curation_eval.testset import measure

    name, seed, rows, captions = task
    model, tokenizer, seconds = train(_STATE["pixels"][rows], captions, _STATE["recipe"], seed)
    hits = measure(model, tokenizer, _STATE["test"])
    return {"training_set": name, "seed": seed, "n_pairs": len(rows), "train_seconds": seconds,
            **{m: float(h.mean()) for m, h in hits.items()}, **{HITS + m: h.tolist() for m, h in hits.items()}}


def evaluate_training_sets(
    ingested: pl.DataFrame, pixels: np.ndarray, scored: pl.DataFrame, manifest: pl.DataFrame, test: TestSet, recipe: Recipe,
    seeds: Sequence[int], names: tuple[str, ...], workers: int = 2, log: Callable[[str], None] = print,
) -> pl.DataFrame:
    """One row per (training set, seed): each figure of ``METRICS`` and its per-query hits (``hits_<metric>``).
    ``ingested`` (uid, caption) is aligned with ``pixels``."""
    row_of = dict(zip(ingested["uid"].to_list(), range(ingested.height)))
    tasks = []
    for seed in seeds:
        for name, frame in build_training_sets(ingested, scored, manifest, seed, names).items():
            frame = frame.filter(pl.col("uid").is_in(list(row_of)))
            if frame.height == 0:
                raise ValueError(f"training set {name!r} is empty: nothing to train on")
            tasks.append((name, seed, np.array([row_of[u] for u in frame["uid"]]), frame["caption"].to_list()))
    t0 = time.perf_counter()
    results = []
    with ExitStack() as stack:
        if workers > 1:
            pool = stack.enter_context(ProcessPoolExecutor(workers, mp_context=mp.get_context("spawn"), initializer=_init, initargs=(pixels, test, recipe)))
            done = pool.map(_train_and_measure, tasks)
        else:  # in this process, with the one thread a worker has (same figures), then the caller's threads back
            import torch

            stack.callback(torch.set_num_threads, torch.get_num_threads())
            stack.callback(_STATE.clear)
            _init(pixels, test, recipe)
            done = map(_train_and_measure, tasks)
        for r in done:
            results.append(r)
            log(f"  {r['training_set']:18s} seed {r['seed']}  n={r['n_pairs']:6d}  t2i R@5 {r['t2i_r5']:.3f} R@1 {r['t2i_r1']:.3f}  ({time.perf_counter() - t0:.0f}s)")
    return pl.DataFrame(results)


def summarise(runs: pl.DataFrame, recipe: Recipe, names: Sequence[str], boot: Bootstrap | None = None) -> pl.DataFrame:
    """(training_set, metric) -> mean, sd (sample sd over seeds), n_pairs (mean over seeds), samples_seen, seeds,
    and the mean's interval over seeds and queries (ci_lo, ci_hi; ``intervals.py``)."""
    long = runs.unpivot(index=["training_set", "seed", "n_pairs"], on=list(METRICS), variable_name="metric")
    out = long.group_by("training_set", "metric").agg(
        mean=pl.col("value").mean(), sd=pl.col("value").std(ddof=1).fill_null(0.0), n_pairs=pl.col("n_pairs").mean().round().cast(pl.Int64),
        seeds=pl.col("seed").sort().cast(pl.String).str.join(","),
    ).with_columns(samples_seen=pl.lit(recipe.samples_seen, dtype=pl.Int64))
    out = out.join(set_intervals(runs, list(METRICS), boot or Bootstrap()), on=["training_set", "metric"], how="left")
    order = {n: i for i, n in enumerate(names)}
    return out.sort(pl.col("training_set").replace_strict(order, default=len(order)), pl.col("metric").replace_strict({m: i for i, m in enumerate(METRICS)})).select(list(EVALUATION_SCHEMA))
