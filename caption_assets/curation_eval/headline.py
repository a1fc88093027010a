"""What the evaluation says, in a line and a table: the curated set against each baseline on the headline metric."""

from __future__ import annotations

import polars as pl

from caption_assets.curation_eval.testset import HEADLINE, METRICS

BASELINES = ("random_same_size", "all_raw", "curated_alt_text", "clip_score_top")


def figure(evaluation: pl.DataFrame, training_set: str, metric: str = HEADLINE) -> tuple[float, float] | None:
    row = evaluation.filter((pl.col("training_set") == training_set) & (pl.col("metric") == metric))
    return (float(row["mean"][0]), float(row["sd"][0])) if row.height else None


def gaps(evaluation: pl.DataFrame, metric: str = HEADLINE) -> dict[str, float]:
    """curated minus each baseline on ``metric`` (points of a fraction, e.g. 0.05 = 5 points)."""
    cur = figure(evaluation, "curated", metric)
    if cur is None:
        return {}
    return {b: cur[0] - f[0] for b in BASELINES if (f := figure(evaluation, b, metric)) is not None}


def beats(evaluation: pl.DataFrame, candidate: str, baseline: str, metric: str = HEADLINE) -> bool | None:
    """Whether ``candidate``'s mean is at least ``baseline``'s (None when either was not measured): the asset check's rule."""
    a, b = figure(evaluation, candidate, metric), figure(evaluation, baseline, metric)
    return None if a is None or b is None else a[0] >= b[0]


def headline(evaluation: pl.DataFrame, metric: str = HEADLINE) -> str:
    """One line: curated's figure, its size, and the gap to each baseline in points."""
    cur = figure(evaluation, "curated", metric)
    if cur is None:
        return "curation_eval: no curated training set in this run"
    n = int(evaluation.filter(pl.col("training_set") == "curated")["n_pairs"][0])
    seeds = len(evaluation["seeds"][0].split(","))
    parts = ", ".join(f"{g * 100:+.1f} pts vs {b}" for b, g in gaps(evaluation, metric).items())
    return f"curated ({n} pairs) text->image R@1 {cur[0] * 100:.1f}% ± {cur[1] * 100:.1f} over {seeds} seeds: {parts}"


def wide_table(evaluation: pl.DataFrame) -> pl.DataFrame:
    """Training sets as rows, metrics as 'mean ± sd' columns (percent), plus n_pairs: for markdown and the CLI."""
    cell = pl.format("{} ± {}", (pl.col("mean") * 100).round(1), (pl.col("sd") * 100).round(1))
    wide = evaluation.with_columns(cell=cell).pivot(on="metric", index=["training_set", "n_pairs"], values="cell", maintain_order=True)
    return wide.select("training_set", "n_pairs", *[m for m in METRICS if m in wide.columns])
