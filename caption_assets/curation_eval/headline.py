"""What the evaluation says, in a line and a table: the curated set against each baseline on the headline metric,
each difference with its 95% interval over seeds and test queries (``intervals.py``)."""

from __future__ import annotations

import polars as pl

from caption_assets.curation_eval.intervals import verdict
from caption_assets.curation_eval.metrics import COMPANION, HEADLINE, LABELS, METRICS

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


def difference(diffs: pl.DataFrame, baseline: str, metric: str = HEADLINE, candidate: str = "curated") -> tuple[float, float, float] | None:
    """(diff, lo, hi) of candidate minus baseline on ``metric``, or None when that pair was not compared."""
    if diffs.is_empty():
        return None
    row = diffs.filter((pl.col("candidate") == candidate) & (pl.col("baseline") == baseline) & (pl.col("metric") == metric))
    return (float(row["diff"][0]), float(row["ci_lo"][0]), float(row["ci_hi"][0])) if row.height else None


def pts(d: float, lo: float, hi: float) -> str:
    return f"{d * 100:+.1f} pts [{lo * 100:+.1f}, {hi * 100:+.1f}]"


def headline(evaluation: pl.DataFrame, diffs: pl.DataFrame | None = None, metric: str = HEADLINE) -> str:
    """One line: curated's figure and size, then the verdict against each baseline with the 95% interval of the
    difference (or, for a run recorded before intervals, the gap in points)."""
    cur = figure(evaluation, "curated", metric)
    if cur is None:
        return "curation_eval: no curated training set in this run"
    n = int(evaluation.filter(pl.col("training_set") == "curated")["n_pairs"][0])
    seeds = len(evaluation["seeds"][0].split(","))
    base = metric.removesuffix("_canonical")
    name = LABELS.get(base, base) + (" (canonical phrasing)" if base != metric else " (held-out phrasing)")
    if diffs is None or diffs.is_empty():
        parts = ", ".join(f"{g * 100:+.1f} pts vs {b}" for b, g in gaps(evaluation, metric).items())
        return f"curated ({n} pairs) {name} {cur[0] * 100:.1f}% ± {cur[1] * 100:.1f} over {seeds} seeds: {parts}"
    found = [(b, d) for b in BASELINES if (d := difference(diffs, b, metric)) is not None]
    parts = "; ".join(f"{verdict(lo, hi)} {b} by {pts(d, lo, hi)}" if verdict(lo, hi) != "ties with" else f"ties with {b} ({pts(d, lo, hi)})"
                      for b, (d, lo, hi) in found)
    level = int(round(float(diffs["level"][0]) * 100))
    line = f"curated ({n} pairs) {name} {cur[0] * 100:.1f}%: {parts} ({level}% intervals over {seeds} seeds x {int(diffs['n_queries'][0])} queries)"
    other = difference(diffs, "random_same_size", COMPANION) if metric == HEADLINE else None
    if other is not None:  # the companion figure: stricter, and near the floor for a few hundred training pairs
        line += f"; at {LABELS[COMPANION].split()[-1]}: {verdict(other[1], other[2])} random_same_size ({pts(*other)})"
    return line


def wide_table(evaluation: pl.DataFrame) -> pl.DataFrame:
    """Training sets as rows, metrics as 'mean [lo, hi]' columns (percent; the 95% interval over seeds and queries),
    plus n_pairs: for markdown and the CLI. Runs recorded before intervals show 'mean ± sd'."""
    pct = lambda c: (pl.col(c) * 100).round(1)  # noqa: E731
    with_ci = "ci_lo" in evaluation.columns and evaluation["ci_lo"].null_count() < evaluation.height
    cell = pl.format("{} [{}, {}]", pct("mean"), pct("ci_lo"), pct("ci_hi")) if with_ci else pl.format("{} ± {}", pct("mean"), pct("sd"))
    wide = evaluation.with_columns(cell=cell).pivot(on="metric", index=["training_set", "n_pairs"], values="cell", maintain_order=True)
    return wide.select("training_set", "n_pairs", *[m for m in METRICS if m in wide.columns])


def differences_table(diffs: pl.DataFrame) -> pl.DataFrame:
    """Baselines as rows, metrics as 'diff [lo, hi]' columns (points): curated minus each baseline."""
    if diffs.is_empty():
        return diffs
    cell = pl.format("{} [{}, {}]", *[(pl.col(c) * 100).round(1) for c in ("diff", "ci_lo", "ci_hi")])
    wide = diffs.with_columns(cell=cell, vs=pl.lit("curated - ") + pl.col("baseline")).pivot(on="metric", index="vs", values="cell", maintain_order=True)
    return wide.select("vs", *[m for m in METRICS if m in wide.columns])
