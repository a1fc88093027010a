"""Alignment levels and keep rules for ``scored_pairs`` (pure functions over numpy / polars)."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import polars as pl

from caption_assets.heuristics import DEFAULT_DROP_FLAGS


def level_boundaries(scores: np.ndarray, n_levels: int) -> list[float]:
    """NoC-style bucket edges: the n_levels-1 inner quantiles of the scores."""
    if n_levels < 2 or len(scores) == 0:
        return []
    return [float(q) for q in np.quantile(scores, np.linspace(0, 1, n_levels + 1)[1:-1])]


def levels_version(boundaries: Sequence[float], scorer: str) -> str:
    """A short content hash: the same edges from the same scorer give the same version (and no staleness)."""
    payload = json.dumps({"boundaries": [round(float(b), 6) for b in boundaries], "scorer": scorer}, sort_keys=True)
    return "levels-" + hashlib.sha1(payload.encode()).hexdigest()[:12]


def reference_sample(pairs: pl.LazyFrame, size: int, seed: int) -> pl.DataFrame:
    """A stable sample of pairs across all shards: the ``size`` smallest hashes of (seed, uid)."""
    return pairs.with_columns(_h=pl.concat_str(pl.lit(str(seed)), pl.col("uid")).hash(seed=0)).sort("_h", "uid").head(size).drop("_h").collect()


def assign_levels(scores: np.ndarray, boundaries: Sequence[float]) -> np.ndarray:
    """Level 0 = least aligned ... len(boundaries) = most aligned (a score equal to an edge goes up)."""
    return np.searchsorted(np.asarray(boundaries, dtype=np.float64), scores, side="right").astype(np.int8)


@dataclass(frozen=True)
class KeepRules:
    drop_flags: tuple[str, ...] = DEFAULT_DROP_FLAGS
    min_clip_score: float | None = None
    drop_clip_quantile: float = 0.0
    min_reward_score: float | None = None


def clip_floor(scores: pl.Series, rules: KeepRules) -> float | None:
    """The CLIP score below which pairs are dropped: the absolute floor, raised to the quantile floor."""
    floor = rules.min_clip_score
    if rules.drop_clip_quantile > 0 and len(scores):
        q = float(scores.quantile(rules.drop_clip_quantile, "linear"))
        floor = q if floor is None else max(floor, q)
    return floor


def keep_decisions(df: pl.DataFrame, rules: KeepRules) -> tuple[pl.DataFrame, float | None]:
    """Add ``keep`` and ``drop_reason``: the first rule that fires (heuristic flag, CLIP score, reward)."""
    floor = clip_floor(df["clip_score"], rules)
    drop_flags = list(rules.drop_flags)
    first_flag = pl.col("flags").list.eval(pl.element().filter(pl.element().is_in(drop_flags))).list.first()
    reason = pl.when(first_flag.is_not_null()).then(pl.concat_str(pl.lit("flag:"), first_flag))
    if floor is not None:
        reason = reason.when(pl.col("clip_score") < floor).then(pl.lit("low_clip_score"))
    if rules.min_reward_score is not None:
        reason = reason.when(pl.col("reward_score") < rules.min_reward_score).then(pl.lit("low_reward_score"))
    out = df.with_columns(drop_reason=reason.otherwise(pl.lit(None, dtype=pl.String)))
    return out.with_columns(keep=pl.col("drop_reason").is_null()), floor
