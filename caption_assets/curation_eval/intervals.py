"""Confidence intervals that account for both training seeds and test queries.

A figure is a mean over seeds (independent trainings) and test queries (a sample of the world's test
split). Both vary: another seed trains another model, another draw of queries gives another recall. The
interval comes from a two-way bootstrap over this crossed design: each replicate draws seeds with
replacement and, independently, queries with replacement, and takes the weighted mean of the per-(seed,
query) hits. Differences between two training sets are paired: the same seed index and the same query
in both, so the noise they share cancels before resampling. Percentile intervals; weights are drawn once
per run (seeded), so every figure of a run uses the same replicates and a run repeats exactly.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import polars as pl

LEVEL = 0.95
N_BOOT = 2000
HITS = "hits_"  # runs carry one list column of per-query hits per metric: hits_<metric>
DIFFERENCE_SCHEMA = {"candidate": pl.String, "baseline": pl.String, "metric": pl.String, "diff": pl.Float64, "ci_lo": pl.Float64,
                     "ci_hi": pl.Float64, "level": pl.Float64, "n_seeds": pl.Int64, "n_queries": pl.Int64}


@dataclass
class Bootstrap:
    """Replicate weights: multinomial counts over seeds and over queries, one row per replicate."""

    n_boot: int = N_BOOT
    level: float = LEVEL
    seed: int = 0

    def __post_init__(self) -> None:
        self._cache: dict[tuple[str, int], np.ndarray] = {}

    def weights(self, what: str, n: int) -> np.ndarray:
        key = (what, n)
        if key not in self._cache:
            rng = np.random.default_rng([self.seed, n, 0 if what == "seeds" else 1])
            self._cache[key] = rng.multinomial(n, np.full(n, 1 / n), size=self.n_boot).astype(np.float64)
        return self._cache[key]

    def interval(self, values: np.ndarray) -> tuple[float, float, float]:
        """(mean, lo, hi) of a [seeds, queries] array of per-query values (hits, or paired differences of hits)."""
        s, q = values.shape
        ws, wq = self.weights("seeds", s), self.weights("queries", q)
        reps = np.einsum("bs,sq,bq->b", ws, values, wq) / (s * q)
        alpha = (1 - self.level) / 2
        lo, hi = np.quantile(reps, [alpha, 1 - alpha])
        return float(values.mean()), float(lo), float(hi)


def hit_matrix(runs: pl.DataFrame, training_set: str, metric: str) -> tuple[list[int], np.ndarray]:
    """(seeds in order, [seeds, queries] hits) of one training set on one metric."""
    part = runs.filter(pl.col("training_set") == training_set).sort("seed")
    return part["seed"].to_list(), np.array(part[HITS + metric].to_list(), dtype=np.float64)


def set_intervals(runs: pl.DataFrame, metrics: list[str], boot: Bootstrap) -> pl.DataFrame:
    """(training_set, metric, ci_lo, ci_hi): the interval of each set's mean on each metric."""
    rows = []
    for name in runs["training_set"].unique(maintain_order=True):
        for metric in metrics:
            _, hits = hit_matrix(runs, name, metric)
            _, lo, hi = boot.interval(hits)
            rows.append((name, metric, lo, hi))
    return pl.DataFrame(rows, schema={"training_set": pl.String, "metric": pl.String, "ci_lo": pl.Float64, "ci_hi": pl.Float64}, orient="row")


def paired_difference(runs: pl.DataFrame, candidate: str, baseline: str, metric: str, boot: Bootstrap) -> tuple[float, float, float]:
    """(diff, lo, hi) of candidate minus baseline, paired on seed index and query."""
    seeds_a, a = hit_matrix(runs, candidate, metric)
    seeds_b, b = hit_matrix(runs, baseline, metric)
    if a.shape != b.shape or len(seeds_a) != len(seeds_b):
        raise ValueError(f"{candidate} and {baseline} were not measured on the same seeds and queries ({a.shape} vs {b.shape})")
    return boot.interval(a - b)


def differences(runs: pl.DataFrame, candidate: str, baselines: list[str], metrics: list[str], boot: Bootstrap) -> pl.DataFrame:
    """One row per (baseline, metric): candidate minus baseline with its interval."""
    have = set(runs["training_set"])
    rows = []
    for baseline in baselines:
        if candidate not in have or baseline not in have:
            continue
        for metric in metrics:
            d, lo, hi = paired_difference(runs, candidate, baseline, metric, boot)
            n_seeds, n_queries = hit_matrix(runs, candidate, metric)[1].shape
            rows.append((candidate, baseline, metric, d, lo, hi, boot.level, n_seeds, n_queries))
    return pl.DataFrame(rows, schema=DIFFERENCE_SCHEMA, orient="row")


def verdict(lo: float, hi: float) -> str:
    """'beats' when the interval lies above zero, 'loses to' below it, 'ties with' when it straddles zero."""
    return "beats" if lo > 0 else "loses to" if hi < 0 else "ties with"
