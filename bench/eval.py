"""curation_eval at scale: a 20k-pair world crawl through the whole chain, then the comparison, in one run.

    python bench/eval.py [--shards 20] [--per-shard 1000] [--steps 1500] [--models bag,open_clip] [--out DIR [--reuse]]

Writes a fresh world crawl (its own seed, never the sample's or the tuning crawl's), materializes the
chain on it with the demo profile and models, then ``curation_eval`` with a recipe sized for it.
Prints the training-set table, each stage's truth figures, the targets of issue #11 met or missed,
and the wall time of each part.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import polars as pl

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
LAION = ROOT.parent / "shared" / "data" / "laion_alt_texts_1000.parquet"
SEED = 31337  # the bench crawl's own seed (sample: 20261125, tuning crawl: 7)


def web_texts() -> list[tuple[str, str]]:
    if not LAION.exists():
        return []
    df = pl.read_parquet(LAION)
    text = next(c for c in df.columns if c.lower() in ("text", "caption", "alt_text", "txt"))
    url = next((c for c in df.columns if c.lower() == "url"), None)
    return [(t, u or "") for t, u in zip(df[text].to_list(), df[url].to_list() if url else [""] * df.height) if t]


def targets(ev: pl.DataFrame, truth: pl.DataFrame, ingested: int, diffs: pl.DataFrame) -> list[tuple[str, str, bool]]:
    from caption_assets.curation_eval.headline import difference, pts
    from caption_assets.curation_eval.metrics import COMPANION, HEADLINE

    def d(baseline: str, metric: str = HEADLINE) -> tuple[float, float, float]:
        return difference(diffs, baseline, metric) or (float("nan"),) * 3

    def t(stage: str, metric: str) -> float:
        row = truth.filter((pl.col("stage") == stage) & (pl.col("metric") == metric))
        return float(row["value"][0]) if row.height and row["value"][0] is not None else float("nan")

    def n(stage: str, metric: str) -> int:
        row = truth.filter((pl.col("stage") == stage) & (pl.col("metric") == metric))
        return int(row["n"][0]) if row.height and row["n"][0] is not None else 0

    n_cur = int(ev.filter(pl.col("training_set") == "curated")["n_pairs"][0])
    share = n_cur / max(ingested, 1)
    rnd, raw, alt, top, canon = d("random_same_size"), d("all_raw"), d("curated_alt_text"), d("clip_score_top"), d("curated_alt_text", HEADLINE + "_canonical")
    rows = [
        ("curated <= 30% of ingested", f"{share:.1%}", share <= 0.30),
        (f"curated - random_same_size >= 5 pts, lo > 0 ({HEADLINE}, held-out)", f"{pts(*rnd)}; {COMPANION} {pts(*d('random_same_size', COMPANION))}", rnd[0] >= 0.05 and rnd[1] > 0),
        (f"curated >= all_raw ({HEADLINE}, held-out)", f"{pts(*raw)}; {COMPANION} {pts(*d('all_raw', COMPANION))}", raw[0] >= 0),
        ("curated - curated_alt_text (held-out)", f"{pts(*alt)}; canonical phrasing {pts(*canon)}", alt[1] > 0),
        ("curated - clip_score_top (held-out)", pts(*top), top[0] >= 0),
        ("misaligned precision >= 0.9", f"{t('scored_pairs', 'misaligned_precision'):.3f}", t("scored_pairs", "misaligned_precision") >= 0.9),
        ("misaligned recall >= 0.8", f"{t('scored_pairs', 'misaligned_recall'):.3f}", t("scored_pairs", "misaligned_recall") >= 0.8),
        # issue #11's compression figures: since copies are dropped at ingest (#21) they count only what ingest missed
        ("near-duplicate recall >= 0.95 (compression)", f"{t('compressed_dataset', 'near_duplicate_flagged'):.3f} of {n('compressed_dataset', 'near_duplicate_flagged')} "
         "copies left after ingest", t("compressed_dataset", "near_duplicate_flagged") >= 0.95),
        ("duplicate precision >= 0.95 (compression)", f"{t('compressed_dataset', 'duplicate_precision'):.3f} of {n('compressed_dataset', 'duplicate_precision')} "
         "flags (SemDeDup's, after ingest)", t("compressed_dataset", "duplicate_precision") >= 0.95),
        ("exported caption attribute accuracy >= 0.9", f"{t('compressed_dataset', 'exported_attribute_accuracy'):.3f} (raw alt-text {t('raw_pairs', 'alt_text_attribute_accuracy'):.3f})",
         t("compressed_dataset", "exported_attribute_accuracy") >= 0.9),
    ]
    # issue #21: copies at ingest, per kind, and what the export still holds; SemDeDup alone beside
    kinds = sorted({m.removeprefix("index_exact_or_copy_").removesuffix("_recall") for m in truth["metric"].to_list()
                    if m.startswith("index_exact_or_copy_") and m.endswith("_recall") and m != "index_exact_or_copy_duplicate_recall"})
    prec = t("raw_pairs", "index_exact_or_copy_duplicate_precision")
    for kind in kinds:
        r, s = t("raw_pairs", f"index_exact_or_copy_{kind}_recall"), t("scored_pairs", f"semdedup_alone_{kind}_recall")
        rows.append((f"copy recall ({kind}) >= 0.95 at ingest", f"{r:.3f} (SemDeDup alone {s:.3f})", r >= 0.95))
    rows.append(("copy precision >= 0.95 at ingest", f"{prec:.3f} (SemDeDup alone {t('scored_pairs', 'semdedup_alone_duplicate_precision'):.3f}, "
                 f"recall {t('scored_pairs', 'semdedup_alone_duplicate_recall'):.3f})", prec >= 0.95))
    extra = t("compressed_dataset", "exported_duplicate_copies")
    rows.append(("exported extra copies <= 0.5% of the export", f"{extra:.2%}", extra <= 0.005))
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shards", type=int, default=20)
    ap.add_argument("--per-shard", type=int, default=1000)
    ap.add_argument("--steps", type=int, default=1500, help="training steps of the recipe (batch 64), the same for every set")
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--models", default="bag", help="the recipe's model(s), comma-separated: bag, open_clip (each evaluated on the same chain output)")
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("--reuse", action="store_true", help="--out holds an earlier run of this bench: skip the crawl and the chain")
    args = ap.parse_args()
    out = args.out or Path(tempfile.mkdtemp(prefix="curation-eval-"))
    from caption_assets.cli import _configure_env, print_evaluation, run_chain, run_eval
    from caption_assets.world.crawl import CrawlSpec, shard_plan, write_crawl

    t0 = time.perf_counter()
    t_crawl = t_chain = 0.0
    failures = 0
    if args.reuse:
        crawl = out / "world" / "crawl"
        print(f"reusing the crawl and chain output under {out}", flush=True)
        _configure_env(crawl, out / "data", "demo")
    else:
        crawl, truth = write_crawl(out / "world", CrawlSpec(shard_plan(args.shards, args.per_shard), seed=SEED, web_texts=web_texts()))
        t_crawl = time.perf_counter() - t0
        print(f"world crawl: {truth.height} pairs in {args.shards} shards ({t_crawl:.0f}s) -> {crawl}", flush=True)
        _configure_env(crawl, out / "data", "demo")
        t1 = time.perf_counter()
        failures = run_chain(evaluate=False)
        t_chain = time.perf_counter() - t1

    from caption_assets.settings import load_settings
    from resources import QualityWarehouse

    settings = load_settings()
    wh = QualityWarehouse(path=str(settings.warehouse_path))
    ingested = int(pl.scan_parquet(str(settings.lake_dir / "raw_pairs" / "*.parquet")).select(pl.len()).collect().item())
    for model in args.models.split(","):
        t2 = time.perf_counter()
        failures += run_eval({"steps": args.steps, "seeds": list(range(args.seeds)), "model": model})
        t_eval = time.perf_counter() - t2
        print(f"\n=== recipe model: {model} ===")
        print_evaluation(detail=True)
        print("\nTargets (issues #11, #20):")
        for name, value, ok in targets(*wh.latest_evaluation(), ingested, wh.latest_differences()):
            print(f"  {'met   ' if ok else 'MISSED'} {name:45s} {value}")
        print(f"\nWall time: crawl {t_crawl:.0f}s, chain {t_chain:.0f}s, curation_eval ({model}) {t_eval:.0f}s, total {time.perf_counter() - t0:.0f}s"
              f"  ({ingested} pairs ingested, recipe {args.steps} steps x 64, {args.seeds} seeds; failures: {failures})", flush=True)


if __name__ == "__main__":
    main()
