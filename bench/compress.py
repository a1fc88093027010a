"""Compression at scale: exact dedup + k-means + SemDeDup + codebook selection on synthetic embeddings.

    python bench/compress.py [--sizes 100000,1000000] [--dim 512]

Each size runs in its own process (so peak RSS is its own). Synthetic data: points around 2,000
centres, 5% planted near-duplicates, a few repeated captions. Targets on a 2-core machine:
1M pairs under 5 minutes and 6 GiB peak RSS; time(1M) / time(100k) no worse than ~12.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import resource
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def synthetic(n: int, dim: int, seed: int = 0):
    import polars as pl

    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(2000, dim)).astype(np.float32)
    x = np.empty((n, dim), dtype=np.float16)  # stored embeddings are float16; build in chunks to keep RSS honest
    for s in range(0, n, 100_000):
        m = min(100_000, n - s)
        x[s : s + m] = centres[rng.integers(0, 2000, m)] + rng.standard_normal((m, dim), dtype=np.float32) * 0.6
    dup = rng.choice(n, size=n // 20, replace=False)
    x[dup] = x[rng.integers(0, n, len(dup))] + (rng.standard_normal((len(dup), dim), dtype=np.float32) * 0.01).astype(np.float16)
    captions = np.where(rng.random(n) < 0.01, "click here to enlarge", np.char.add("caption ", np.arange(n).astype(str)))
    df = pl.DataFrame({
        "sha256": np.char.add("h", rng.integers(0, n * 50, n).astype(str)),
        "final_caption": captions,
        "phash": rng.integers(-(2**62), 2**62, n, dtype=np.int64),
        "final_score": rng.normal(0.3, 0.05, n).astype(np.float32),
        "final_reward_score": rng.normal(0, 1, n).astype(np.float32),
    })
    return df, x


def run(n: int, dim: int, q: mp.Queue) -> None:
    from caption_assets.compress import CompressConfig, compress

    df, x = synthetic(n, dim)
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    t0 = time.perf_counter()
    res = compress(df, x, CompressConfig(target_ratio=0.15, score="mix"))
    elapsed = time.perf_counter() - t0
    q.put((elapsed, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, base, int(res.selected.sum()), int(res.semantic_dup.sum()), int(res.exact_dup.sum()), res.n_clusters))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="100000,1000000")
    ap.add_argument("--dim", type=int, default=512)
    args = ap.parse_args()
    times = {}
    ctx = mp.get_context("spawn")
    for n in (int(s) for s in args.sizes.split(",")):
        q = ctx.Queue()
        p = ctx.Process(target=run, args=(n, args.dim, q))
        p.start()
        elapsed, rss, base, selected, sem, exact, k = q.get()
        p.join()
        times[n] = elapsed
        print(f"{n:>9,} x {args.dim}: {elapsed:7.1f} s  peak RSS {rss / 1024:5.2f} GiB (inputs alone {base / 1024:4.2f})  clusters {k}  exact dup {exact:,}  semantic dup {sem:,}  selected {selected:,}", flush=True)
    sizes = sorted(times)
    if len(sizes) >= 2:
        a, b = sizes[0], sizes[-1]
        print(f"time({b:,}) / time({a:,}) = {times[b] / times[a]:.1f}  for {b / a:.0f}x the data")


if __name__ == "__main__":
    main()
