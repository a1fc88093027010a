"""Ingest throughput: raw_pairs pairs/s next to a bare Pillow open+decode loop over the same images.

    python bench/ingest.py [--n 20000] [--shards 1]

Each measurement runs in its own process so its peak RSS is its own. The ratio
ingest / bare decode is the figure that matters: the target is >= 0.7.
"""

from __future__ import annotations

import argparse
import io
import multiprocessing as mp
import resource
import tarfile
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image


def make_shards(folder: Path, n: int, shards: int, size: int = 256) -> list[Path]:
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:size, 0:size]
    paths = []
    per = -(-n // shards)
    for s in range(shards):
        path = folder / f"bench-{s:05d}.tar"
        with tarfile.open(path, "w") as tf:
            for i in range(s * per, min(n, (s + 1) * per)):
                base = np.stack([(xx * (i % 7 + 1)) % 256, (yy * (i % 5 + 1)) % 256, (xx + yy + i) % 256], -1)
                arr = np.clip(base + rng.normal(0, 12, base.shape), 0, 255).astype(np.uint8)
                buf = io.BytesIO()
                Image.fromarray(arr).save(buf, "JPEG", quality=85)
                for name, data in ((f"{i:08d}.jpg", buf.getvalue()), (f"{i:08d}.txt", f"synthetic pattern number {i} with stripes".encode())):
                    info = tarfile.TarInfo(name)
                    info.size = len(data)
                    tf.addfile(info, io.BytesIO(data))
        paths.append(path)
    return paths


def bare_decode(paths: list[Path]) -> int:
    n = 0
    for path in paths:
        with tarfile.open(path) as tf:
            for m in tf:
                if m.name.endswith(".jpg"):
                    with Image.open(io.BytesIO(tf.extractfile(m).read())) as im:  # type: ignore[union-attr]
                        im.load()
                    n += 1
    return n


def ingest(paths: list[Path]) -> int:
    from caption_assets.ingest import ingest_shard
    from resources.storage import atomic_write_parquet

    n = 0
    for path in paths:
        result = ingest_shard(path, path.name)
        atomic_write_parquet(result.pairs, path.with_suffix(".raw_pairs.parquet"))
        n += result.pairs.height
    return n


def _measure(fn_name: str, paths: list[Path], queue: mp.Queue) -> None:
    fn = {"bare": bare_decode, "ingest": ingest}[fn_name]
    if fn_name == "ingest":  # import outside the timed region (resources/ pulls in torch, transformers, dagster)
        import caption_assets.ingest  # noqa: F401
        import resources.storage  # noqa: F401
    baseline = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    t0 = time.perf_counter()
    n = fn(paths)
    queue.put((n, time.perf_counter() - t0, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, baseline))


def measure(fn_name: str, paths: list[Path]) -> tuple[int, float, float, float]:
    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    p = ctx.Process(target=_measure, args=(fn_name, paths, q))
    p.start()
    out = q.get()
    p.join()
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=20_000)
    ap.add_argument("--shards", type=int, default=1)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        paths = make_shards(Path(tmp), args.n, args.shards)
        mb = sum(p.stat().st_size for p in paths) / 1e6
        print(f"generated {args.n} pairs in {len(paths)} shard(s), {mb:.0f} MB, in {time.perf_counter() - t0:.0f}s")
        bn, bt, brss, bbase = measure("bare", paths)
        inn, it, irss, ibase = measure("ingest", paths)
    print(f"bare decode : {bn / bt:8.1f} pairs/s   peak RSS {brss:7.0f} MiB (after imports {bbase:5.0f} MiB)")
    print(f"raw_pairs   : {inn / it:8.1f} pairs/s   peak RSS {irss:7.0f} MiB (after imports {ibase:5.0f} MiB: the project's libraries)")
    print(f"ratio ingest/bare = {(inn / it) / (bn / bt):.2f}   (target >= 0.70; peak RSS target < 1536 MiB)")


if __name__ == "__main__":
    main()
