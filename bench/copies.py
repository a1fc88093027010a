"""Copy verdicts at ingest against the world's truth, without the rest of the chain.

    python bench/copies.py [--shards 20 --per-shard 1000] [--out DIR [--reuse]]

The crawl is `bench/eval.py`'s (same seed, same shard plan), so its figures are the 20k crawl's `raw_pairs`
duplicate figures; here each shard goes through `ingest_shard` and the global duplicate index in shard order in
one process (in the index's stable order, so no shard goes stale), which is what `raw_pairs` does per partition. Prints recall per kind of copy, the precision of
`copy` and `exact` verdicts, what the wrong verdicts joined (two renders of one description, or scenes the
world describes differently), and the time per shard (candidates per image grow with the index).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import polars as pl

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shards", type=int, default=20)
    ap.add_argument("--per-shard", type=int, default=1000)
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("--reuse", action="store_true", help="--out holds this bench's crawl: ingest it again (a fresh index)")
    args = ap.parse_args()
    from bench.eval import SEED, web_texts
    from caption_assets.curation_eval.stage_truth import STAGE_TRUTH_SCHEMA, duplicate_metrics
    from caption_assets.duplicate_index import ImageIndex
    from caption_assets.ingest import ingest_shard
    from caption_assets.world.crawl import CrawlSpec, shard_plan, write_crawl

    out = args.out or Path(tempfile.mkdtemp(prefix="copies-"))
    plan = shard_plan(args.shards, args.per_shard)
    t0 = time.perf_counter()
    if args.reuse:
        crawl, truth = out / "world" / "crawl", pl.read_parquet(out / "world" / "truth.parquet")
    else:
        crawl, truth = write_crawl(out / "world", CrawlSpec(plan, seed=SEED, web_texts=web_texts()))
        print(f"world crawl: {truth.height} rows in {args.shards} shards ({time.perf_counter() - t0:.0f}s) -> {crawl}", flush=True)
    index_path = out / "index.sqlite"
    index_path.unlink(missing_ok=True)
    index = ImageIndex(index_path)
    frames: dict[str, pl.DataFrame] = {}
    t_ingest = time.perf_counter()

    def ingest(name: str, again: bool = False) -> None:
        t1 = time.perf_counter()
        result = ingest_shard(crawl / name, name, duplicates=lambda rows: index.update(name, rows).verdicts)
        frames[name] = result.pairs
        print(f"  {name}{' (stale, again)' if again else ''}: {result.pairs.height} pairs, "
              f"{result.pairs['duplicate_kind'].is_not_null().sum()} verdicts, {time.perf_counter() - t1:.0f}s", flush=True)

    # in the index's stable order (shard key): verdicts do not depend on arrival order (tests/test_duplicate_index.py),
    # and this order leaves no shard stale, so none is ingested twice
    for name in sorted(n for n, _, _ in plan):
        ingest(name)
    while stale := index.stale_shards():  # a shard that holds later copies of an earlier-sorting shard's images
        for name in stale:
            ingest(name, again=True)
    t_ingest = time.perf_counter() - t_ingest
    raw = pl.concat(list(frames.values()), how="diagonal_relaxed")
    raw.write_parquet(out / "raw_pairs.parquet")
    none = raw.select("uid", drop_reason=pl.lit(None, pl.String))
    rows = duplicate_metrics(truth, none, none, raw.select("uid").clear(), raw)
    figures = pl.DataFrame(rows, schema=STAGE_TRUTH_SCHEMA, orient="row").filter(pl.col("stage") == "raw_pairs")
    with pl.Config(tbl_rows=-1, tbl_width_chars=120):
        print(figures)
    print(wrong_verdicts(raw, truth))
    print(f"ingest {t_ingest:.0f}s for {raw.height} pairs ({1000 * t_ingest / max(raw.height, 1):.1f} ms per pair); out: {out}")


def wrong_verdicts(raw: pl.DataFrame, truth: pl.DataFrame) -> str:
    """Verdicts linking two images of different duplicate groups: how many, and how many join two renders of one
    description (same objects, background and word: the world's semantic twins)."""
    t = truth.select("uid", "duplicate_group", "scene_id", desc=pl.struct("objects", "background", "word"))
    group = pl.coalesce("duplicate_group", "scene_id")
    v = (raw.filter(pl.col("duplicate_kind").is_not_null()).select("uid", "duplicate_kind", "duplicate_of")
         .join(t.select("uid", g=group, d="desc"), on="uid")
         .join(t.select(duplicate_of="uid", g_of=group, d_of="desc"), on="duplicate_of"))
    wrong = v.filter(pl.col("g") != pl.col("g_of"))
    twins = wrong.filter(pl.col("d") == pl.col("d_of")).height
    per_kind = v.group_by("duplicate_kind").agg(n=pl.len(), wrong=(pl.col("g") != pl.col("g_of")).sum()).sort("duplicate_kind")
    lines = [f"verdicts: {v.height}, wrong {wrong.height} (precision {1 - wrong.height / max(v.height, 1):.3f}); "
             f"of the wrong ones {twins} join two renders of one description, {wrong.height - twins} different scenes"]
    lines += [f"  {k}: {n} verdicts, {w} wrong" for k, n, w in per_kind.iter_rows()]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
