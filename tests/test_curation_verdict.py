"""curation_eval's verdict: intervals over seeds and queries, the held-out phrasing, the check's three outcomes."""

from __future__ import annotations

import random

import numpy as np
import polars as pl
import pytest

from caption_assets.curation_eval.headline import differences_table, headline
from caption_assets.curation_eval.intervals import HITS, Bootstrap, differences, paired_difference, verdict
from caption_assets.curation_eval.phrasing import HELD_OUT_ZEROSHOT_PROMPTS, held_out_caption, skeleton
from caption_assets.curation_eval.recipe import Recipe
from caption_assets.curation_eval.run import summarise
from caption_assets.curation_eval.testset import METRICS
from caption_assets.fusion import FusionInput, rule_fuse
from caption_assets.world.captions import TEMPLATES, describe, partial, wrong_attribute
from caption_assets.world.evaluate import ZEROSHOT_PROMPTS
from caption_assets.world.scene import SHAPES, sample_scene


def _runs(rates: dict[str, list[float]], queries: int = 400, seed: int = 0, difficulty: np.ndarray | None = None) -> pl.DataFrame:
    """Per-query hits drawn for each (training set, seed): P(hit) = rate, shifted per query by a shared difficulty."""
    rng = np.random.default_rng(seed)
    rows = []
    for name, per_seed in rates.items():
        for s, rate in enumerate(per_seed):
            p = np.clip(rate + (difficulty if difficulty is not None else 0.0), 0, 1)
            hits = {m: (rng.random(queries) < p).astype(np.uint8) for m in METRICS}
            rows.append({"training_set": name, "seed": s, "n_pairs": 100, "train_seconds": 1.0,
                         **{m: float(h.mean()) for m, h in hits.items()}, **{HITS + m: h.tolist() for m, h in hits.items()}})
    return pl.DataFrame(rows)


def test_the_interval_covers_zero_for_the_same_set_and_excludes_it_for_a_real_gap():
    boot = Bootstrap()
    difficulty = np.random.default_rng(9).normal(0, 0.25, 400)  # hard queries are hard for every model: pairing removes it
    runs = _runs({"curated": [0.60, 0.62, 0.58], "twin": [0.61, 0.59, 0.60], "random_same_size": [0.45, 0.40, 0.48]}, difficulty=difficulty)
    d, lo, hi = paired_difference(runs, "curated", "twin", "t2i_r1", boot)
    assert lo < 0 < hi and abs(d) < 0.04 and verdict(lo, hi) == "ties with"
    d, lo, hi = paired_difference(runs, "curated", "random_same_size", "t2i_r1", boot)
    assert 0 < lo < d < hi and verdict(lo, hi) == "beats"
    d, lo, hi = paired_difference(runs, "random_same_size", "curated", "t2i_r1", boot)
    assert hi < 0 and verdict(lo, hi) == "loses to"
    # the seeds count, not only the queries: one seed far off widens the interval
    wobbly = _runs({"curated": [0.60, 0.62, 0.20], "random_same_size": [0.45, 0.40, 0.48]}, difficulty=difficulty)
    _, lo2, hi2 = paired_difference(wobbly, "curated", "random_same_size", "t2i_r1", boot)
    assert hi2 - lo2 > 2 * (hi - lo) and lo2 < 0


def test_the_same_run_gives_the_same_interval_and_the_summary_carries_it():
    runs = _runs({"curated": [0.6, 0.6, 0.6], "random_same_size": [0.4, 0.4, 0.4], "all_raw": [0.55, 0.5, 0.6]})
    one = differences(runs, "curated", ["random_same_size", "all_raw"], list(METRICS), Bootstrap())
    two = differences(runs, "curated", ["random_same_size", "all_raw"], list(METRICS), Bootstrap())
    assert one.equals(two) and one.height == 2 * len(METRICS) and (one["ci_lo"] <= one["diff"]).all() and (one["diff"] <= one["ci_hi"]).all()
    assert set(one["n_seeds"]) == {3} and set(one["n_queries"]) == {400}
    ev = summarise(runs, Recipe(steps=7, batch_size=8), ["curated", "random_same_size", "all_raw"])
    row = ev.filter((pl.col("training_set") == "curated") & (pl.col("metric") == "t2i_r1")).row(0, named=True)
    assert row["ci_lo"] < row["mean"] < row["ci_hi"] and row["mean"] == pytest.approx(runs.filter(pl.col("training_set") == "curated")["t2i_r1"].mean())
    line = headline(ev, one)
    d = one.filter((pl.col("baseline") == "random_same_size") & (pl.col("metric") == "t2i_r5")).row(0, named=True)
    assert line.startswith("curated (100 pairs) text->image R@5 (held-out phrasing)")
    assert f"beats random_same_size by {d['diff'] * 100:+.1f} pts [{d['ci_lo'] * 100:+.1f}, {d['ci_hi'] * 100:+.1f}]" in line
    assert "(95% intervals over 3 seeds x 400 queries)" in line
    r1 = one.filter((pl.col("baseline") == "random_same_size") & (pl.col("metric") == "t2i_r1")).row(0, named=True)
    assert line.endswith(f"; at R@1: beats random_same_size ({r1['diff'] * 100:+.1f} pts [{r1['ci_lo'] * 100:+.1f}, {r1['ci_hi'] * 100:+.1f}])")
    assert differences_table(one)["vs"].to_list() == ["curated - random_same_size", "curated - all_raw"]


def test_the_held_out_phrasing_shares_no_template_with_any_caption_source():
    """Sources: the grammar in every framing (crawl alt-texts, the captioner's targets, canonical references),
    lazy and wrong-attribute alt-texts, the rule fuser's merges, and the zero-shot prompts the demo models use."""
    rng = random.Random(0)
    scenes = [sample_scene(random.Random(f"phrasing:{i}")) for i in range(600)]
    sources: set[str] = set()
    for s in scenes:
        grammar = [describe(s, t, positions=p, sizes=z, word=w) for t in range(len(TEMPLATES)) for p in (True, False) for z in (True, False) for w in (True, False)]
        sources |= {skeleton(c) for c in grammar}
        sources |= {skeleton(partial(s, rng)), skeleton(wrong_attribute(s, rng)[0])}
        sources.add(skeleton(rule_fuse(FusionInput(rng.choice(grammar), rng.choice(grammar)), True, ocr_text=s.word)))
    sources |= {skeleton(p) for p in ZEROSHOT_PROMPTS} | {skeleton(f"a {t}") for t in SHAPES}
    held_out = {skeleton(held_out_caption(s)) for s in scenes} | {skeleton(p) for p in HELD_OUT_ZEROSHOT_PROMPTS}
    assert held_out and not held_out & sources
    assert skeleton(held_out_caption(scenes[0])).startswith("<colour> backdrop; objects: <colour> <shape> (<size>, ")
    assert skeleton('a small red circle on the left on a blue background with the word "OPEN"') == \
        '<count> <size> <colour> <shape> on the left on <count> <colour> background with the word <word>'
