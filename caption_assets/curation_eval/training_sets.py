"""The training sets ``curation_eval`` compares, all built from the same crawl (DataComp's filtering track).

Each set is a frame of (uid, caption); images are looked up by uid from the ingested pairs, so every
set's images go through the same decode. Sizes are tied to ``curated`` where the comparison needs it.
"""

from __future__ import annotations

import polars as pl

TRAINING_SETS = ("curated", "curated_alt_text", "random_same_size", "clip_score_top", "all_raw")
# A deliberately bad selection, for showing that the evaluation can fail (tests, bench).
CONTROL_SETS = ("clip_score_bottom",)


def build_training_sets(
    ingested: pl.DataFrame, scored: pl.DataFrame, manifest: pl.DataFrame, seed: int, names: tuple[str, ...] = TRAINING_SETS
) -> dict[str, pl.DataFrame]:
    """``ingested``: uid, caption (every pair that passed ingest); ``scored``: uid, clip_score; ``manifest``:
    uid, final_caption (the export). ``seed`` draws the random subset. Returns name -> (uid, caption)."""
    alt = ingested.select("uid", "caption")
    n = manifest.height
    by_score = scored.select("uid", "clip_score").join(alt, on="uid").sort(["clip_score", "uid"], descending=[True, False])
    builders = {
        "curated": lambda: manifest.select("uid", pl.col("final_caption").alias("caption")),
        "curated_alt_text": lambda: manifest.select("uid").join(alt, on="uid", how="left").select("uid", "caption"),
        "random_same_size": lambda: alt.sort("uid").sample(n=min(n, alt.height), seed=seed, shuffle=True),
        "clip_score_top": lambda: by_score.head(n).select("uid", "caption"),
        "clip_score_bottom": lambda: by_score.tail(n).select("uid", "caption"),
        "all_raw": lambda: alt,
    }
    unknown = set(names) - set(builders)
    if unknown:
        raise ValueError(f"unknown training set(s) {sorted(unknown)}; choose from {sorted(builders)}")
    return {name: builders[name]().filter(pl.col("caption").is_not_null()) for name in names}
